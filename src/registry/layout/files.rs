//! File primitives of a layout that need no layout state: the permissions ferry writes
//! with, creating a file with them, and opening one for reading safely.

use std::path::Path;

/// The permissions of what ferry writes into a layout, set explicitly rather than left to
/// the umask: owner-only by default; `layout_mode = "shared"` for a disk another account
/// reads (0644 files, 0755 folders).
#[derive(Clone, Copy, Debug)]
pub struct Modes {
    pub file: u32,
    pub dir: u32,
}

impl Default for Modes {
    fn default() -> Self {
        Modes::new(false)
    }
}

impl Modes {
    pub fn new(shared: bool) -> Self {
        if shared {
            Modes {
                file: 0o644,
                dir: 0o755,
            }
        } else {
            Modes {
                file: 0o600,
                dir: 0o700,
            }
        }
    }
}

/// Create `path` for writing with `mode` (not the umask's).
pub(super) fn create(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // `mode` at creation is still masked by the umask: set it outright.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// Open a layout file for reading: never through a final symlink, never anything but a
/// regular file (a FIFO or `/dev/zero` placed in a layout would stall or flood a read).
pub(super) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}
