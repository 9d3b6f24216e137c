//! The proxy's switches, one per behaviour of the registry quirks catalogue (the item ids
//! are the catalogue's: ECR-1, GCP-1…; S/R/I is its confidence: source-backed, reported,
//! inferred), and the profiles that combine them per registry.

use std::collections::HashSet;

/// Where an upload's `Location` points.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Location {
    /// As the backend says (absolute, this proxy's origin).
    #[default]
    AsIs,
    /// A path only (QUAY-7 for manifests; allowed by the spec).
    Relative,
    /// The same host on another port, where the proxy also listens (JF-1, NX-7).
    OtherPort,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mount {
    /// As Distribution: 201 when `from` holds the blob, else 202 and a session.
    #[default]
    Spec,
    /// Blob mounting off (ECR's default, ECR-4): always 202 and a fresh session.
    Never,
    /// Docker Hub (HUB-7): 400 when `from` has more than two parts, 401 when the token
    /// does not cover pull on `from`.
    StrictFrom,
    /// Harbor (HBR-3): a `from` whose project does not exist is 401 with an empty challenge.
    FromMissing401,
    /// GitLab on S3 (GL-5): 500.
    Error500,
}

/// How a push to a repository that was not created first ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingRepo {
    /// ECR (ECR-7): the connection closes on the upload POST, no answer.
    EcrEof,
    /// Quay, GAR (QUAY-10, GCP-4): 404 NAME_UNKNOWN.
    NotFound,
    /// Harbor (HBR-3): 401, an empty challenge, `project X not found`.
    Harbor401,
}

/// How a PUT to an existing tag is refused, whatever the digest (ECR-6, HBR-1, QUAY-6,
/// HUB-12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Immutable {
    /// 400 TAG_INVALID "... cannot be overwritten because the tag is immutable" (status I).
    Ecr,
    /// 412 PRECONDITION "... configured as immutable".
    Harbor,
    /// 409 TAG_IMMUTABLE.
    Quay,
    /// 403 DENIED "... due to immutability settings".
    Hub,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delete {
    /// Distribution 2.8: by digest (every tag on it goes); by tag 400 DIGEST_INVALID.
    #[default]
    Spec,
    /// Docker Hub (HUB-6): by tag 405; a digest some tag points at 403; else 202.
    Hub,
    /// GHCR (GHCR-3): 405 UNSUPPORTED always.
    Deny405,
    /// Distribution 3, GitLab 16.4+, Quay (DIST-4, GL-3, QUAY-12): by tag removes the tag.
    Tags,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Catalog {
    #[default]
    Open,
    /// 401 whatever the credentials (HUB-1, GL-2).
    Deny401,
    /// 404 (GHCR-4).
    NotFound,
    /// 200 `{"repositories":[]}` although there are some (GCP-5).
    Empty,
    /// 401 "unauthorized to list catalog" (HBR-5).
    AdminOnly,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Referrers {
    /// Distribution 2.8 and 3, Docker Hub (HUB-8): 404, no `OCI-Subject`.
    #[default]
    Absent,
    /// GitLab's virtual registry (GL-4): an HTML 404.
    Html404,
    /// GHCR (GHCR-1): 303 to a web API on another host that answers 429.
    Redirect303,
    /// The OCI 1.1 API, answered from the subjects of manifests pushed through the proxy;
    /// `subject_header`: the manifest PUT answers `OCI-Subject` (Harbor, zot; not Quay).
    Api { subject_header: bool },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// Anonymous.
    #[default]
    None,
    /// Basic only (ECR-8: user `AWS`); `upper`: the challenge says `BASIC` (NX-2).
    Basic {
        user: String,
        pass: String,
        upper: bool,
    },
    /// Bearer tokens from the proxy's own `/token`, for Basic credentials (or anonymous
    /// pulls when `user` is empty: GHCR-2).
    Bearer { user: String, pass: String },
    /// ACR (ACR-3): the token endpoint takes only a POSTed refresh token.
    OAuth2 { refresh_token: String },
}

#[derive(Clone, Debug, Default)]
pub struct Knobs {
    // Uploads.
    /// A chunk PATCH answers this instead of 202 (ECR-1: 201).
    pub patch_status: Option<u16>,
    /// Every PATCH answers the first PATCH's `Range` (ECR-2).
    pub freeze_range: bool,
    /// A PATCH with `Content-Range` smaller than this is refused with 400 SIZE_INVALID (ECR-3:
    /// 5 MiB; the body is a guess, I).
    pub min_part: Option<u64>,
    /// A PATCH with `Content-Range`, or a second PATCH, is refused with 400 (GCP-1; status I).
    pub monolithic_only: bool,
    /// After more than one PATCH, the closing PUT fails with DIGEST_INVALID, as if only the
    /// last chunk were kept (GHCR-6 as ocync reports it; I).
    pub last_chunk_only: bool,
    /// A PUT body larger than this gets 413, plain text (ACR-1: about 20 MB).
    pub put_max_body: Option<u64>,
    /// A request body without `Content-Length` gets 400 CONTENT_LENGTH_INVALID (ACR-2), 411
    /// for manifests (NX-1).
    pub require_content_length: bool,
    /// `Content-Range` must be `a-b`: a `bytes ` prefix or a `/total` is 400 (ACR-2, QUAY-4).
    pub strict_content_range: bool,
    /// `Content-Range` and `Content-Length` must agree, else 416 (ZOT-3).
    pub range_matches_length: bool,
    /// Quay's Range forms: `bytes=0--1` on POST, exclusive end with `bytes=` on GET (QUAY-3).
    pub quay_ranges: bool,
    /// The closing PUT answers this instead of 201 (GCP-6: 200).
    pub put_status: Option<u16>,
    pub location: Location,
    pub mount: Mount,
    /// Repositories a push may go to; others end as `MissingRepo` says (None: any).
    pub missing_repo: Option<MissingRepo>,
    pub immutable: Option<Immutable>,
    pub delete: Delete,
    // Listing.
    pub catalog: Catalog,
    /// Tag lists in pages of this many, with `Link` (GHCR-5, QUAY-8: 100; DIST-1).
    pub tags_page: Option<usize>,
    /// The `Link` of a tag page points at another origin (the other listener).
    pub tags_link_elsewhere: bool,
    /// `n` above this is an error (ECR-9: 1000, UNSUPPORTED).
    pub tags_max_n: Option<usize>,
    /// GCR's extra fields: `child`, and a `manifest` map of digest to tags (GCP-2).
    pub tags_gcr: bool,
    /// A `null` in every tag list (NX-4).
    pub tags_null: bool,
    /// A digest-shaped entry in every tag list (JF-4).
    pub tags_digest: bool,
    /// 406 on a tag list whose Accept is not JSON (JF-5).
    pub tags_require_json: bool,
    // Manifests.
    /// HEAD answers without `Docker-Content-Digest` (X-2, NX-3).
    pub head_strip_digest: bool,
    /// HEAD of something missing is 403 (JF-6).
    pub head_missing_403: bool,
    /// HEAD's `Content-Length` differs from GET's (HBR-8).
    pub head_length_differs: bool,
    /// Docker v2 manifests are refused with 400 MANIFEST_INVALID (ZOT-1).
    pub oci_only: bool,
    /// An index whose children are missing is refused with 400 MANIFEST_BLOB_UNKNOWN (DIST-2).
    pub index_children_must_exist: bool,
    pub referrers: Referrers,
    /// Error bodies become `{"errors":[{"status":N,"message":…}]}` (JF-2).
    pub errors_artifactory: bool,
    // Auth.
    pub auth: Auth,
    /// 401s carry no `WWW-Authenticate`, except on `GET /v2/` (GCP-3).
    pub challenge_ping_only: bool,
    /// A refused request that carried `Authorization` is challenged with `Basic realm="harbor"`
    /// (HBR-4).
    pub basic_if_authorized: bool,
    /// Token lifetime in seconds (HUB-10: 300; GL-1: 300).
    pub token_ttl: u64,
    /// The token answer has no `expires_in` (QUAY-2).
    pub omit_expires_in: bool,
    /// The token answer's field is `access_token`, not `token`.
    pub access_token_field: bool,
    /// The token endpoint refuses scopes with `delete` or `registry:catalog` with 400 (QUAY-1).
    pub reject_odd_scopes: bool,
    /// The token endpoint reads only the first `scope`.
    pub first_scope_only: bool,
    /// Docker Hub's pull budget: `RateLimit-*` on manifest answers, 429 past it (HUB-2, HUB-4).
    pub pull_budget: Option<u64>,
    /// Blob GETs redirect (307) to a second listener that refuses `Authorization` with an S3
    /// error, as presigned URLs do (X-3, HUB-11).
    pub blob_redirect: bool,
    /// A PATCH body is stored only when it arrived whole (object stores whose parts are
    /// atomic: S3 multipart for ECR, Azure blocks for ACR; I). Distribution's filesystem
    /// driver keeps whatever part of a cut body arrived.
    pub whole_parts: bool,
    /// Upload bodies flow at most this many bytes a second (GL-1: tokens expire mid-upload).
    pub throttle: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    Hub,
    Ecr,
    Gar,
    Acr,
    Ghcr,
    Quay,
    Harbor,
    Gitlab,
    Artifactory,
    Nexus,
    Zot,
    Dist3,
}

pub const USER: &str = "robot";
pub const PASS: &str = "quirky-secret-1";

impl Profile {
    pub const ALL: [Profile; 12] = [
        Profile::Hub,
        Profile::Ecr,
        Profile::Gar,
        Profile::Acr,
        Profile::Ghcr,
        Profile::Quay,
        Profile::Harbor,
        Profile::Gitlab,
        Profile::Artifactory,
        Profile::Nexus,
        Profile::Zot,
        Profile::Dist3,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Hub => "hub",
            Profile::Ecr => "ecr",
            Profile::Gar => "gar",
            Profile::Acr => "acr",
            Profile::Ghcr => "ghcr",
            Profile::Quay => "quay",
            Profile::Harbor => "harbor",
            Profile::Gitlab => "gitlab",
            Profile::Artifactory => "artifactory",
            Profile::Nexus => "nexus",
            Profile::Zot => "zot",
            Profile::Dist3 => "dist3",
        }
    }

    /// The username and password ferry and skopeo log in with (ECR: `AWS` and a token).
    pub fn credentials(self) -> Option<(&'static str, &'static str)> {
        match self {
            Profile::Ecr => Some(("AWS", PASS)),
            // docker login's convention for an identity (refresh) token.
            Profile::Acr => Some(("00000000-0000-0000-0000-000000000000", PASS)),
            Profile::Zot | Profile::Dist3 => None,
            _ => Some((USER, PASS)),
        }
    }

    /// Whether the profile rests on behaviour the catalogue marks inferred (I) for the
    /// upload path.
    pub fn inferred(self) -> &'static str {
        match self {
            Profile::Ghcr => "multi-PATCH keeping only the last chunk (GHCR-6) is inferred",
            Profile::Gar => "the refusal status of a chunked PATCH (GCP-1) is inferred",
            Profile::Ecr => "the 5 MiB part refusal on /v2/ (ECR-3) and the immutable-tag status (ECR-6) are inferred",
            _ => "",
        }
    }

    pub fn knobs(self) -> Knobs {
        let bearer = || Auth::Bearer {
            user: USER.into(),
            pass: PASS.into(),
        };
        let mut k = Knobs {
            token_ttl: 300,
            ..Knobs::default()
        };
        match self {
            Profile::Hub => {
                k.auth = bearer();
                k.catalog = Catalog::Deny401;
                k.mount = Mount::StrictFrom;
                k.delete = Delete::Hub;
                k.blob_redirect = true;
                k.pull_budget = Some(10_000);
            }
            Profile::Ecr => {
                k.auth = Auth::Basic {
                    user: "AWS".into(),
                    pass: PASS.into(),
                    upper: false,
                };
                k.patch_status = Some(201);
                k.freeze_range = true;
                k.min_part = Some(5 << 20);
                k.tags_max_n = Some(1000);
                k.tags_page = Some(100);
                k.immutable = Some(Immutable::Ecr);
                k.missing_repo = Some(MissingRepo::EcrEof);
                k.mount = Mount::Never;
                k.referrers = Referrers::Api {
                    subject_header: false,
                };
                k.whole_parts = true;
            }
            Profile::Gar => {
                k.auth = bearer();
                k.monolithic_only = true;
                k.tags_gcr = true;
                k.catalog = Catalog::Empty;
                k.challenge_ping_only = true;
                // Not `put_status = 200` (GCP-6): containers/image refuses a 200 there, and
                // skopeo pushes to GAR; that report is GCR's, from 2017.
                k.missing_repo = Some(MissingRepo::NotFound);
            }
            Profile::Acr => {
                k.auth = Auth::OAuth2 {
                    refresh_token: PASS.into(),
                };
                k.put_max_body = Some(20 << 20);
                k.require_content_length = true;
                k.strict_content_range = true;
                k.referrers = Referrers::Api {
                    subject_header: true,
                };
                k.whole_parts = true;
            }
            Profile::Ghcr => {
                k.auth = Auth::Bearer {
                    user: USER.into(),
                    pass: PASS.into(),
                };
                k.referrers = Referrers::Redirect303;
                k.delete = Delete::Deny405;
                k.catalog = Catalog::NotFound;
                k.tags_page = Some(100);
                k.last_chunk_only = true;
            }
            Profile::Quay => {
                k.auth = bearer();
                k.reject_odd_scopes = true;
                k.omit_expires_in = true;
                k.quay_ranges = true;
                k.strict_content_range = true;
                k.immutable = Some(Immutable::Quay);
                k.tags_page = Some(100);
                k.location = Location::Relative;
                k.delete = Delete::Tags;
                k.missing_repo = Some(MissingRepo::NotFound);
                k.referrers = Referrers::Api {
                    subject_header: false,
                };
            }
            Profile::Harbor => {
                k.auth = bearer();
                k.basic_if_authorized = true;
                k.immutable = Some(Immutable::Harbor);
                k.missing_repo = Some(MissingRepo::Harbor401);
                k.catalog = Catalog::AdminOnly;
                k.head_length_differs = true;
                k.mount = Mount::FromMissing401;
                k.referrers = Referrers::Api {
                    subject_header: true,
                };
            }
            Profile::Gitlab => {
                k.auth = bearer();
                k.token_ttl = 300;
                k.catalog = Catalog::Deny401;
                k.referrers = Referrers::Html404;
                k.mount = Mount::Error500;
                k.delete = Delete::Tags;
            }
            Profile::Artifactory => {
                k.auth = bearer();
                k.errors_artifactory = true;
                k.tags_digest = true;
                k.tags_require_json = true;
                k.head_missing_403 = true;
                k.location = Location::OtherPort;
                k.referrers = Referrers::Api {
                    subject_header: false,
                };
            }
            Profile::Nexus => {
                k.auth = Auth::Basic {
                    user: USER.into(),
                    pass: PASS.into(),
                    upper: true,
                };
                k.require_content_length = true;
                k.head_strip_digest = true;
                k.tags_null = true;
                k.location = Location::OtherPort;
            }
            Profile::Zot => {
                k.oci_only = true;
                k.range_matches_length = true;
                k.referrers = Referrers::Api {
                    subject_header: true,
                };
            }
            Profile::Dist3 => {
                k.tags_page = Some(1000);
                k.index_children_must_exist = true;
                k.delete = Delete::Tags;
            }
        }
        k
    }
}

/// Repositories that exist before anything is pushed (for profiles with `missing_repo`).
#[derive(Default)]
pub struct Created(pub std::sync::Mutex<HashSet<String>>);

impl Created {
    pub fn add(&self, repo: &str) {
        self.0.lock().unwrap().insert(repo.to_owned());
    }

    /// `repo` or a project (path prefix) it is in was created.
    pub fn has(&self, repo: &str) -> bool {
        self.0.lock().unwrap().iter().any(|c| {
            repo == c
                || repo
                    .strip_prefix(c.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    }
}
