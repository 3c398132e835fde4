//! Running a program installed beside this one: `mk-binary-cache publish`
//! hands over to `mk-binary-cache-publish`, which holds the network code the
//! static builder must not carry, and `build --upstream URL` asks it which
//! paths an upstream serves over the network.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `program` in the directory of the running executable if it is there,
/// else its bare name, for `PATH`.
fn locate(program: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(program)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// The error of a program that could not be started: the places looked in
/// when it was not found.
fn start_error(program: &str, found: &Path, error: io::Error) -> io::Error {
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

/// Replaces this process with `program`, found in the directory of the
/// running executable, else in `PATH`. Returns only on failure, with the
/// places looked in.
pub fn exec(program: &str, args: &[OsString]) -> io::Error {
    let found = locate(program);
    let error = Command::new(&found).args(args).exec();
    start_error(program, &found, error)
}

/// Starts `program`, found as [`exec`] finds it, as `configure` sets it up.
pub fn spawn(
    program: &str,
    configure: impl FnOnce(&mut Command) -> &mut Command,
) -> io::Result<std::process::Child> {
    let found = locate(program);
    configure(&mut Command::new(&found))
        .spawn()
        .map_err(|e| start_error(program, &found, e))
}
