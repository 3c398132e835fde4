//! Running a program installed beside this one: `mk-binary-cache publish`
//! hands over to `mk-binary-cache-publish`, which holds the network code the
//! static builder must not carry.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// Replaces this process with `program`, found in the directory of the
/// running executable, else in `PATH`. Returns only on failure, with the
/// places looked in.
pub fn exec(program: &str, args: &[OsString]) -> io::Error {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(program)))
        .filter(|path| path.is_file());
    let found = beside.clone().unwrap_or_else(|| PathBuf::from(program));
    let error = Command::new(&found).args(args).exec();
    if error.kind() != io::ErrorKind::NotFound {
        return io::Error::new(
            error.kind(),
            format!("running {}: {error}", found.display()),
        );
    }
    let here = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.display().to_string()))
        .unwrap_or_else(|| "this program's directory".to_string());
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{program} is in neither {here} nor PATH"),
    )
}
