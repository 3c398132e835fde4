//! Files that appear whole or not at all: one naming scheme for temporary
//! files (and the clean-up of those a killed run left), syncing directories
//! and filesystems, directory locks, and copies that share their bytes.
//!
//! A file is written under a temporary name in the directory of its final
//! name, made durable (synced itself, or by a sync of its filesystem), then
//! renamed (or hard-linked) into place; the directory is synced before
//! anything relies on the rename.

use std::ffi::OsStr;
use std::fs::{self, File, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::support::interrupt;

/// Names for temporary files: `.<final name>.tmp.<pid>.<n>`, in the
/// directory of the file they become. Hidden, and with a suffix of their own,
/// they are never taken for a narinfo or a NAR; the process ID keeps
/// concurrent runs apart and tells a later run which files are stale.
pub struct TempNames {
    /// This process's ID, asked once: each asking is a system call.
    pid: u32,
    next: AtomicU64,
}

impl Default for TempNames {
    fn default() -> Self {
        TempNames {
            pid: std::process::id(),
            next: AtomicU64::new(0),
        }
    }
}

impl TempNames {
    /// A new temporary name for `dest`, unique within this process.
    ///
    /// Once an interrupt came ([`interrupt::requested`]), it never returns:
    /// the file would be made after the clean-up looked for this process's
    /// temporary files, and left behind.
    pub fn next(&self, dest: &Path) -> PathBuf {
        if interrupt::requested() {
            interrupt::wait_for_exit();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = dest
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        dest.with_file_name(format!(".{name}.tmp.{}.{n}", self.pid))
    }

    /// The process that made a temporary file of this name, if it is one.
    pub fn owner(name: &OsStr) -> Option<u32> {
        let name = name.to_string_lossy();
        let mut parts = name.strip_prefix('.')?.rsplitn(4, '.');
        let (_n, pid, tmp) = (
            parts.next()?.parse::<u64>().ok()?,
            parts.next()?.parse().ok()?,
            parts.next()?,
        );
        (tmp == "tmp" && parts.next().is_some()).then_some(pid)
    }

    /// Whether `name` is a temporary name whose process is gone: a leftover
    /// of a run that was killed, which nothing will rename into place.
    pub fn is_stale(name: &OsStr) -> bool {
        Self::owner(name).is_some_and(|pid| !process_is_running(pid))
    }
}

/// Removes the temporary files of this process in `dir` (not in its
/// subdirectories); returns how many there were. For an interrupted run:
/// what it was writing will never be renamed into place.
pub fn remove_own_temporaries(dir: &Path) -> io::Result<usize> {
    let me = std::process::id();
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if TempNames::owner(&entry.file_name()) == Some(me) {
            remove_temporary(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn process_is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks that the process exists without signalling it.
    // SAFETY: kill has no memory-safety preconditions.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes a stale temporary file, or directory (as `sign --out` makes);
/// one already gone is no error.
pub fn remove_temporary(path: &Path) -> io::Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes the renames done in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// Renames `from` to `to` unless `to` exists (`RENAME_NOREPLACE`); returns
/// whether it did. A filesystem that cannot rename so counts as one where
/// `to` exists: the caller then replaces `to` the careful way.
pub fn rename_new(from: &Path, to: &Path) -> io::Result<bool> {
    let c_path = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (from, to) = (c_path(from)?, c_path(to)?);
    // SAFETY: two NUL-terminated paths that live across the call.
    let renamed = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    } == 0;
    if renamed {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EEXIST | libc::EINVAL | libc::ENOSYS) => Ok(false),
        _ => Err(error),
    }
}

/// Flushes everything written to the filesystem holding `dir` to disk: one
/// flush for many files, rather than one per file.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let handle = File::open(dir)?;
    // SAFETY: a plain system call on a descriptor that stays open for it.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A `flock` on a directory, released when dropped (closing the descriptor
/// releases the lock).
pub struct DirLock {
    _held: File,
}

impl DirLock {
    /// Waits for the exclusive lock on the open directory `dir`.
    pub fn exclusive(dir: File) -> io::Result<Self> {
        Self::lock(dir, libc::LOCK_EX)
    }

    /// Waits for a shared lock on the open directory `dir`: any number of
    /// holders, but none while another holds it exclusively.
    pub fn shared(dir: File) -> io::Result<Self> {
        Self::lock(dir, libc::LOCK_SH)
    }

    /// Takes the exclusive lock on `dir` if no one holds the lock; None if
    /// someone does.
    pub fn try_exclusive(dir: File) -> io::Result<Option<Self>> {
        Self::try_lock(dir, libc::LOCK_EX)
    }

    /// Takes a shared lock on `dir` unless someone holds it exclusively;
    /// None if someone does.
    pub fn try_shared(dir: File) -> io::Result<Option<Self>> {
        Self::try_lock(dir, libc::LOCK_SH)
    }

    fn try_lock(dir: File, operation: libc::c_int) -> io::Result<Option<Self>> {
        match Self::lock(dir, operation | libc::LOCK_NB) {
            Ok(lock) => Ok(Some(lock)),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn lock(dir: File, operation: libc::c_int) -> io::Result<Self> {
        // SAFETY: the descriptor is open for the call's duration.
        if unsafe { libc::flock(dir.as_raw_fd(), operation) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirLock { _held: dir })
    }
}

/// How a file's bytes got into a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// A second name for the same file: no bytes copied.
    HardLink,
    /// A new file sharing the original's blocks (`FICLONE`): no bytes copied.
    Reflink,
    Copy,
}

/// Makes `to` a file with the bytes of `from`, sharing them where it can: a
/// hard link works within one filesystem when we may link the file (the
/// kernel's `protected_hardlinks` forbids linking others' files, such as
/// store files owned by root, to ordinary users); a reflink where the
/// filesystem supports it (btrfs, XFS); otherwise the bytes are copied.
/// A linked file keeps its permissions, being the same file; a reflinked or
/// copied one gets those of `from`.
pub fn share_or_copy(from: &Path, to: &Path) -> io::Result<Transfer> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(Transfer::HardLink);
    }
    let mut source = File::open(from)?;
    let mode = source.metadata()?.permissions().mode() & 0o7777;
    let mut dest = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    let transfer = if reflink(&source, &dest).is_ok() {
        Transfer::Reflink
    } else {
        io::copy(&mut source, &mut dest)?;
        Transfer::Copy
    };
    dest.set_permissions(Permissions::from_mode(mode))?;
    Ok(transfer)
}

/// Makes `to` share the blocks of `from` (the `FICLONE` ioctl).
fn reflink(from: &File, to: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its argument and touches
    // no memory of ours; both descriptors are open for the whole call.
    let result = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_the_process_id() {
        let temp = TempNames::default();
        let a = temp.next(Path::new("/c/nar/x.narinfo"));
        let b = temp.next(Path::new("/c/nar/x.narinfo"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/c/nar")));
        let name = a.file_name().unwrap();
        assert!(
            name.to_string_lossy().starts_with(".x.narinfo.tmp."),
            "{name:?}"
        );
        assert_eq!(TempNames::owner(name), Some(std::process::id()));
        assert!(!TempNames::is_stale(name));
        for not_temporary in [
            "x.narinfo",
            ".x.narinfo",
            ".tmp.1.2",
            "x.tmp.1.2",
            ".x.tmp.a.2",
        ] {
            let name = OsStr::new(not_temporary);
            assert_eq!(TempNames::owner(name), None, "{not_temporary}");
            assert!(!TempNames::is_stale(name), "{not_temporary}");
        }
    }

    #[test]
    fn a_process_that_is_gone_is_not_running() {
        assert!(process_is_running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_is_running(pid));
        assert!(TempNames::is_stale(OsStr::new(&format!(
            ".x.narinfo.tmp.{pid}.0"
        ))));
    }

    #[test]
    fn removes_a_temporary_file_or_directory_and_tolerates_one_gone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".f.tmp.1.0");
        let tree = dir.path().join(".d.tmp.1.0");
        fs::write(&file, b"x").unwrap();
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("sub/f"), b"x").unwrap();
        for path in [&file, &tree] {
            remove_temporary(path).unwrap();
            assert!(!path.exists(), "{}", path.display());
            remove_temporary(path).unwrap();
        }
    }

    #[test]
    fn share_or_copy_links_within_a_filesystem() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::write(&a, "bytes").unwrap();
        assert_eq!(share_or_copy(&a, &b).unwrap(), Transfer::HardLink);
        assert_eq!(fs::read(&b).unwrap(), b"bytes");
    }

    #[test]
    fn share_or_copy_fails_rather_than_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::write(&a, "new").unwrap();
        fs::write(&b, "old").unwrap();
        assert!(share_or_copy(&a, &b).is_err());
        assert_eq!(fs::read(&b).unwrap(), b"old");
    }

    #[test]
    fn rename_new_renames_onto_a_name_that_is_free() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        fs::write(&from, "new").unwrap();
        assert!(rename_new(&from, &to).unwrap());
        assert_eq!(fs::read(&to).unwrap(), b"new");
        assert!(!from.exists());
    }

    #[test]
    fn rename_new_leaves_a_file_that_exists_and_says_so() {
        // The caller then syncs its file before replacing this one, which a
        // narinfo may point to.
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        fs::write(&from, "new").unwrap();
        fs::write(&to, "old").unwrap();
        assert!(!rename_new(&from, &to).unwrap());
        assert_eq!(fs::read(&to).unwrap(), b"old");
        assert_eq!(fs::read(&from).unwrap(), b"new");
    }
}
