//! A real small filesystem for tests of storage faults: a tmpfs mounted in
//! the test's temp dir that can be filled to ENOSPC with one call and
//! drained again, and files that can be made immutable (`chattr +i`, which
//! even root cannot write through a new open). Needs root (CI runs as
//! root); [`is_root`] lets a test skip with a clear message otherwise.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the tests run as root (mount and immutable files need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A mounted tmpfs, unmounted on drop.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` MiB at `path` (created).
    pub fn mount(path: &Path, size_mib: u32) -> Result<Self, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount tmpfs at {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fill_path(&self) -> PathBuf {
        self.path.join("fill")
    }

    /// Writes a file until the filesystem is full (ENOSPC); returns the
    /// bytes written.
    pub fn fill(&self) -> std::io::Result<u64> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.fill_path())?;
        let mut written = 0u64;
        // Big chunks first, then ever smaller ones for the last pages.
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
            let buf = vec![0u8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        let _ = f.sync_all();
        Ok(written)
    }

    /// Frees what [`Self::fill`] took.
    pub fn drain(&self) -> std::io::Result<()> {
        std::fs::remove_file(self.fill_path())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open (a server being
        // killed) must not keep the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `chattr +i` / `chattr -i` on `path`: an immutable file cannot be opened
/// for writing, not even by root.
pub fn set_immutable(path: &Path, on: bool) -> std::io::Result<()> {
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    let f = File::open(path)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one long through the
    // pointer, which points to a live local.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if on {
            flags |= FS_IMMUTABLE_FL;
        } else {
            flags &= !FS_IMMUTABLE_FL;
        }
        if libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
