//! Finding a file the cache names (a narinfo's `URL`, `nix-cache-info`)
//! without ever leaving the cache, and opening it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// How many symlinks a file name may go through, as Linux allows.
const MAX_SYMLINKS: usize = 40;

/// Opens a file that [`resolve`] found, refusing a symlink put in its place since.
pub(super) fn open_no_follow(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Why a file named in the cache cannot be read from it. Paths are shown
/// relative to the cache.
#[derive(Debug, Error)]
pub(super) enum Unreachable {
    #[error("{name:?} is not a plain relative path inside the cache: {why}")]
    NotRelative { name: String, why: &'static str },
    #[error("symlink {link} points to {}, outside the cache", target.display())]
    Escapes { link: String, target: PathBuf },
    #[error("{0} does not exist")]
    Missing(String),
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("more than {MAX_SYMLINKS} symlinks on the way to {0}")]
    TooManyLinks(String),
    #[error("cannot look at {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Finds the regular file that `name`, a path relative to the canonical
/// directory `root`, leads to, without ever leaving `root`.
///
/// `name` must be relative and have no empty, `.` or `..` segments, as Nix
/// requires of a local cache's file names. Each segment is looked at with
/// `lstat`; a symlink's target replaces it, a relative target read from the
/// symlink's directory, an absolute one only if it lies under `root`. Any
/// step that would leave `root`, by a `..` or an absolute target, is refused
/// before anything outside is touched, so what lies outside is never opened
/// or even looked at.
pub(super) fn resolve(root: &Path, name: &str) -> Result<PathBuf, Unreachable> {
    check_plain_relative(name)?;
    let shown = |p: &Path| p.display().to_string();
    let mut pending: VecDeque<OsString> = name.split('/').map(OsString::from).collect();
    // What has been resolved so far, relative to `root`: directories only,
    // never a symlink, so `..` may simply drop the last segment.
    let mut current = PathBuf::new();
    let mut links = 0;
    // The last symlink followed, to name when a `..` leaves the cache.
    let mut last_link: Option<(PathBuf, PathBuf)> = None;
    while let Some(segment) = pending.pop_front() {
        if segment == ".." {
            if !current.pop() {
                let (link, target) = last_link.clone().expect("only a symlink brings in '..'");
                return Err(Unreachable::Escapes {
                    link: shown(&link),
                    target,
                });
            }
            continue;
        }
        let candidate = current.join(&segment);
        let meta = lstat(root, &candidate)?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Unreachable::TooManyLinks(name.to_owned()));
            }
            let (target, next, from_top) = symlink_target(root, &candidate)?;
            if from_top {
                current = PathBuf::new();
            }
            push_segments(&mut pending, &next);
            last_link = Some((candidate, target));
        } else if pending.is_empty() && !meta.is_file() {
            return Err(Unreachable::NotAFile(shown(&candidate)));
        } else {
            current = candidate;
        }
    }
    if current.as_os_str().is_empty() {
        // Only a symlink to the cache itself ends here.
        return Err(Unreachable::NotAFile(name.to_owned()));
    }
    Ok(root.join(current))
}

/// `lstat` of `candidate`, a path relative to `root`.
fn lstat(root: &Path, candidate: &Path) -> Result<fs::Metadata, Unreachable> {
    fs::symlink_metadata(root.join(candidate)).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            Unreachable::Missing(candidate.display().to_string())
        }
        _ => Unreachable::Io {
            path: candidate.display().to_string(),
            source,
        },
    })
}

/// Where the symlink `link` (relative to `root`) leads: its target as read,
/// the path to resolve next, and whether that path starts from `root` (an
/// absolute target inside the cache) rather than from the link's directory.
/// An absolute target outside the cache is refused without being looked at.
fn symlink_target(root: &Path, link: &Path) -> Result<(PathBuf, PathBuf, bool), Unreachable> {
    let target = fs::read_link(root.join(link)).map_err(|source| Unreachable::Io {
        path: link.display().to_string(),
        source,
    })?;
    if !target.is_absolute() {
        return Ok((target.clone(), target, false));
    }
    match target.strip_prefix(root) {
        Ok(inside) => Ok((target.clone(), inside.to_owned(), true)),
        Err(_) => Err(Unreachable::Escapes {
            link: link.display().to_string(),
            target,
        }),
    }
}

/// Refuses a name that is not a plain relative path: empty, a URL,
/// absolute, with a NUL byte, or with an empty, `.` or `..` segment.
fn check_plain_relative(name: &str) -> Result<(), Unreachable> {
    let not_relative = |why| Unreachable::NotRelative {
        name: name.to_owned(),
        why,
    };
    if name.is_empty() {
        return Err(not_relative("it is empty"));
    }
    if name.contains("://") {
        return Err(not_relative("it is a URL, not a file name"));
    }
    if name.starts_with('/') {
        return Err(not_relative("it is absolute"));
    }
    if name.contains('\0') {
        return Err(not_relative("it contains a NUL byte"));
    }
    for segment in name.split('/') {
        match segment {
            "" => return Err(not_relative("it has an empty segment")),
            "." | ".." => return Err(not_relative("it has a '.' or '..' segment")),
            _ => {}
        }
    }
    Ok(())
}

/// Puts the segments of a symlink's (relative) target before those still
/// to resolve.
fn push_segments(pending: &mut VecDeque<OsString>, target: &Path) {
    for component in target.components().rev() {
        match component {
            Component::Normal(s) => pending.push_front(s.to_owned()),
            Component::ParentDir => pending.push_front("..".into()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A canonical temporary directory laid out by `setup`.
    fn cache_dir(setup: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cache");
        fs::create_dir_all(root.join("nar")).unwrap();
        fs::write(root.join("nar/a.nar"), "a").unwrap();
        fs::write(tmp.path().join("secret"), "outside").unwrap();
        setup(&root);
        let root = fs::canonicalize(root).unwrap();
        (tmp, root)
    }

    #[test]
    fn resolves_plain_names_and_symlinks_that_stay_inside() {
        let (_tmp, root) = cache_dir(|root| {
            symlink("a.nar", root.join("nar/relative")).unwrap();
            symlink("../nar/./a.nar", root.join("nar/up-and-back")).unwrap();
            symlink(root.join("nar"), root.join("abs-dir")).unwrap();
        });
        let a = root.join("nar/a.nar");
        assert_eq!(resolve(&root, "nar/a.nar").unwrap(), a);
        assert_eq!(resolve(&root, "nar/relative").unwrap(), a);
        assert_eq!(resolve(&root, "nar/up-and-back").unwrap(), a);
        assert_eq!(resolve(&root, "abs-dir/relative").unwrap(), a);
    }

    #[test]
    fn refuses_names_that_are_not_plain_relative_paths() {
        let (_tmp, root) = cache_dir(|_| {});
        for name in [
            "",
            "/etc/passwd",
            "../secret",
            "nar/../nar/a.nar",
            "./nar/a.nar",
            "nar//a.nar",
            "https://example.org/nar/a.nar",
        ] {
            assert!(
                matches!(resolve(&root, name), Err(Unreachable::NotRelative { .. })),
                "{name:?}"
            );
        }
    }

    #[test]
    fn refuses_symlinks_that_lead_outside_without_following_them() {
        let (tmp, root) = cache_dir(|root| {
            symlink("../../secret", root.join("nar/relative-out")).unwrap();
            symlink("/etc/passwd", root.join("nar/absolute-out")).unwrap();
            symlink("../..", root.join("nar/parent")).unwrap();
            // Outside and missing: still refused as outside, not as missing.
            symlink("/nonexistent/x.nar", root.join("nar/dangling-out")).unwrap();
        });
        for name in [
            "nar/relative-out",
            "nar/absolute-out",
            "nar/parent/secret",
            "nar/dangling-out",
        ] {
            assert!(
                matches!(resolve(&root, name), Err(Unreachable::Escapes { .. })),
                "{name}"
            );
        }
        drop(tmp);
    }

    #[test]
    fn tells_missing_files_directories_and_loops_apart() {
        let (_tmp, root) = cache_dir(|root| {
            symlink("loop", root.join("nar/loop")).unwrap();
            symlink("nope", root.join("nar/dangling")).unwrap();
        });
        assert!(matches!(
            resolve(&root, "nar/b.nar"),
            Err(Unreachable::Missing(_))
        ));
        assert!(matches!(
            resolve(&root, "nar/dangling"),
            Err(Unreachable::Missing(_))
        ));
        assert!(matches!(
            resolve(&root, "nar/a.nar/x"),
            Err(Unreachable::Missing(_))
        ));
        assert!(matches!(
            resolve(&root, "nar"),
            Err(Unreachable::NotAFile(_))
        ));
        assert!(matches!(
            resolve(&root, "nar/loop"),
            Err(Unreachable::TooManyLinks(_))
        ));
    }
}
