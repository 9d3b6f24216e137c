//! Small file systems for the state store: full or read-only disks, real ones (tmpfs), since
//! permission bits do not stop root and the tests run as root in CI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a folder for the life of the value.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` (as `mount -o size=` takes it, e.g. `4m`) at `path`, read-only
    /// when `ro`. None when this process may not mount (not root, or no CAP_SYS_ADMIN): the
    /// caller says the test was skipped.
    pub fn mount(path: &Path, size: &str, ro: bool) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let opts = format!("size={size}{}", if ro { ",ro" } else { "" });
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs {
            path: path.to_owned(),
        })
    }

    /// Fill what is left with one file, so the next write that needs a new block fails.
    pub fn fill(&self) {
        let filler = self.path.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .output();
        let _ = Command::new("sync").status();
    }

    pub fn free(&self) {
        let _ = std::fs::remove_file(self.path.join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Print why a test could not run here; it still counts as passed, so say so loudly.
pub fn skipped(why: &str) {
    eprintln!("SKIPPED: {why}");
}
