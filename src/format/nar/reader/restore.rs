//! Unpacking a NAR to disk.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{BUFFER, NarError, NarSummary, RegularFile, Visitor, parse};

/// Unpacks the NAR in `reader` to `dest`, which must not exist yet (its parent
/// must). Regular files get mode 0o755 if executable, else 0o644; directories
/// are created with the process's umask.
///
/// Nothing is written outside `dest`: entry names cannot be `..` or contain
/// `/`, every directory is one this call just created, and files are created
/// with `O_EXCL`, so no existing file or symlink is followed or overwritten.
/// On error, what was written so far stays.
pub fn restore(reader: impl Read, dest: &Path) -> Result<NarSummary, NarError> {
    let mut restorer = Restorer {
        path: dest.to_owned(),
        summary: NarSummary::default(),
    };
    restorer.summary.nar_size = parse(BufReader::with_capacity(BUFFER, reader), &mut restorer)?;
    Ok(restorer.summary)
}

struct Restorer {
    /// Where the current node goes.
    path: PathBuf,
    summary: NarSummary,
}

impl Restorer {
    fn context(&self, doing: &'static str) -> impl FnOnce(io::Error) -> io::Error + '_ {
        move |e| io::Error::new(e.kind(), format!("{doing} {}: {e}", self.path.display()))
    }
}

impl Visitor for Restorer {
    fn regular(&mut self, file: &mut RegularFile<'_>) -> io::Result<()> {
        self.summary.count_regular(file);
        let mode = if file.executable() { 0o755 } else { 0o644 };
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&self.path)
            .map_err(self.context("creating"))?;
        io::copy(file, &mut out).map_err(self.context("writing"))?;
        // The umask may have removed bits from `mode`.
        out.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(self.context("setting the mode of"))
    }

    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        self.summary.symlinks += 1;
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &self.path)
            .map_err(self.context("creating symlink"))
    }

    fn directory_start(&mut self) -> io::Result<()> {
        self.summary.directories += 1;
        fs::create_dir(&self.path).map_err(self.context("creating directory"))
    }

    fn entry(&mut self, name: &[u8]) -> io::Result<()> {
        self.path.push(OsStr::from_bytes(name));
        Ok(())
    }

    fn entry_end(&mut self) -> io::Result<()> {
        self.path.pop();
        Ok(())
    }
}
