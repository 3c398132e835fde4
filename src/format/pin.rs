//! A pin: the named roots of a cache's releases, one revision per release,
//! with the retention policy that `prune` applies to them.
//!
//! A pin is the plain text file `pins/<name>` in the cache, so that a person
//! or a script can fetch it over HTTP, as `store-paths`. Lines are
//! `Key: value`; blank lines only separate blocks for the reader. The header
//! names the pin and its policy; then come the revisions, **newest first**,
//! each a `Revision:` line (a number, one more than the revision recorded
//! before it, never reused), its `Time:` (seconds since 1970, UTC) and one
//! `Root:` line per store path:
//!
//! ```text
//! Pin: release
//! KeepRevisions: 3
//! KeepDays: 30
//!
//! Revision: 2
//! Time: 1765137600
//! Root: /nix/store/…-hello-2.12
//!
//! Revision: 1
//! Time: 1765051200
//! Root: /nix/store/…-hello-2.11
//! ```
//!
//! The store paths of the newest revision are the `Root:` lines before the
//! second `Revision:` line (`awk '/^Revision:/{n++} n==1 && /^Root:/{print $2}'`).
//! `KeepRevisions` and `KeepDays` are each optional: a revision is retained
//! if it is one of the newest `KeepRevisions`, or younger than `KeepDays`
//! days; with neither, every revision is; the newest is always retained.
//! Unknown keys are ignored, so that later versions can add some; a key
//! that a block holds twice, a value that does not parse, or revisions out
//! of order are errors that name the line.

use std::fmt;

use thiserror::Error;

use super::store_path::StorePath;

/// The directory of a cache that holds its pins.
pub const DIR: &str = "pins";

/// A pin file is read no further than this.
pub const MAX_SIZE: u64 = 16 << 20;

/// Seconds in a day, for `KeepDays`.
const DAY: u64 = 24 * 60 * 60;

/// Which revisions `prune` keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest this many revisions.
    pub keep_revisions: Option<u64>,
    /// Keep the revisions younger than this many days.
    pub keep_days: Option<u64>,
}

impl fmt::Display for Retention {
    /// In words: `newest 3 revisions or younger than 30 days`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        match (self.keep_revisions, self.keep_days) {
            (None, None) => write!(f, "every revision"),
            (Some(n), None) => write!(f, "the newest {}", plural(n, "revision", "revisions")),
            (None, Some(d)) => write!(f, "revisions younger than {}", plural(d, "day", "days")),
            (Some(n), Some(d)) => write!(
                f,
                "the newest {}, and any younger than {}",
                plural(n, "revision", "revisions"),
                plural(d, "day", "days")
            ),
        }
    }
}

/// One release under a pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub number: u64,
    /// Seconds since 1970, UTC.
    pub time: u64,
    pub roots: Vec<StorePath>,
}

/// A pin file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub retention: Retention,
    /// Newest first.
    pub revisions: Vec<Revision>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PinError {
    #[error(
        "'{0}' is not a pin name: use 1 to 100 letters, digits and '-', '_', '.', '+', not starting with '.'"
    )]
    Name(String),
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("it has no 'Pin:' line")]
    NoName,
    #[error("revision {0} has no 'Time:' line")]
    NoTime(u64),
}

/// Whether `name` can name a pin: a file name that is safe in a URL and in
/// an S3 key, and never hidden or a temporary file's.
pub fn check_name(name: &str) -> Result<(), PinError> {
    let ok = (1..=100).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(PinError::Name(name.to_owned())),
    }
}

impl Pin {
    /// A pin with no revision yet.
    pub fn new(name: &str, retention: Retention) -> Result<Pin, PinError> {
        check_name(name)?;
        Ok(Pin {
            name: name.to_owned(),
            retention,
            revisions: Vec::new(),
        })
    }

    /// The file's path in the cache: `pins/<name>`.
    pub fn file_name(name: &str) -> String {
        format!("{DIR}/{name}")
    }

    /// Records `roots` as a new revision at `time`; returns its number.
    pub fn add_revision(&mut self, time: u64, roots: Vec<StorePath>) -> u64 {
        let number = self.revisions.first().map_or(1, |r| r.number + 1);
        self.revisions.insert(
            0,
            Revision {
                number,
                time,
                roots,
            },
        );
        number
    }

    /// This pin (the published one) with `ours`' policy and the revisions
    /// of `ours` it lacks (a revision is the same if it has the same time
    /// and roots), numbered on from its newest, oldest first: what
    /// `publish` uploads, so that publishers add to a pin, never replace it.
    pub fn merged_with(&self, ours: &Pin) -> Pin {
        let mut merged = self.clone();
        merged.retention = ours.retention;
        for revision in ours.revisions.iter().rev() {
            let known = self
                .revisions
                .iter()
                .any(|r| r.time == revision.time && r.roots == revision.roots);
            if !known {
                merged.add_revision(revision.time, revision.roots.clone());
            }
        }
        merged
    }

    /// Whether the revision at `index` (0 is the newest) is retained at
    /// `now` (seconds since 1970).
    pub fn retains(&self, index: usize, now: u64) -> bool {
        let Retention {
            keep_revisions,
            keep_days,
        } = self.retention;
        if index == 0 || (keep_revisions.is_none() && keep_days.is_none()) {
            return true;
        }
        let newest = keep_revisions.is_some_and(|n| (index as u64) < n);
        let young = keep_days.is_some_and(|d| {
            now.saturating_sub(self.revisions[index].time) < d.saturating_mul(DAY)
        });
        newest || young
    }

    /// The revisions retained at `now`, and those the policy drops.
    pub fn split(&self, now: u64) -> (Vec<&Revision>, Vec<&Revision>) {
        let (kept, dropped): (Vec<_>, Vec<_>) = self
            .revisions
            .iter()
            .enumerate()
            .partition(|(i, _)| self.retains(*i, now));
        (
            kept.into_iter().map(|(_, r)| r).collect(),
            dropped.into_iter().map(|(_, r)| r).collect(),
        )
    }

    /// Reads a pin file; store paths must be in `store_dir`.
    pub fn parse(text: &str, store_dir: &str) -> Result<Pin, PinError> {
        let mut name = None;
        let mut retention = Retention::default();
        let mut revisions: Vec<Revision> = Vec::new();
        let mut has_time = true;
        for (i, line) in text.lines().enumerate() {
            let error = |message: String| PinError::Line {
                line: i + 1,
                message,
            };
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(": ") else {
                return Err(error(format!("'{line}' is not 'Key: value'")));
            };
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| error(format!("{what} '{value}' is not a number")))
            };
            let once = |set: bool| match set {
                true => Err(error(format!("'{key}' appears twice"))),
                false => Ok(()),
            };
            match (key, revisions.last_mut()) {
                ("Pin", None) => {
                    once(name.is_some())?;
                    check_name(value).map_err(|e| error(e.to_string()))?;
                    name = Some(value.to_owned());
                }
                ("KeepRevisions", None) => {
                    once(retention.keep_revisions.is_some())?;
                    match number("KeepRevisions")? {
                        0 => return Err(error("KeepRevisions is 0: it keeps at least 1".into())),
                        n => retention.keep_revisions = Some(n),
                    }
                }
                ("KeepDays", None) => {
                    once(retention.keep_days.is_some())?;
                    retention.keep_days = Some(number("KeepDays")?);
                }
                ("Revision", last) => {
                    let n = number("Revision")?;
                    if let Some(last) = last {
                        if !has_time {
                            return Err(PinError::NoTime(last.number));
                        }
                        if n >= last.number {
                            return Err(error(format!(
                                "revision {n} comes after revision {}: the newest comes first",
                                last.number
                            )));
                        }
                    }
                    has_time = false;
                    revisions.push(Revision {
                        number: n,
                        time: 0,
                        roots: Vec::new(),
                    });
                }
                ("Time", Some(revision)) => {
                    once(has_time)?;
                    revision.time = number("Time")?;
                    has_time = true;
                }
                ("Root", Some(revision)) => {
                    let path = StorePath::parse(value, store_dir).map_err(|_| {
                        error(format!("'{value}' is not a store path in {store_dir}"))
                    })?;
                    if !revision.roots.contains(&path) {
                        revision.roots.push(path);
                    }
                }
                ("Pin" | "KeepRevisions" | "KeepDays", Some(_)) => {
                    return Err(error(format!("'{key}' belongs before the first revision")));
                }
                ("Time" | "Root", None) => {
                    return Err(error(format!("'{key}' comes before any 'Revision:' line")));
                }
                _ => {}
            }
        }
        if let Some(last) = revisions.last()
            && !has_time
        {
            return Err(PinError::NoTime(last.number));
        }
        Ok(Pin {
            name: name.ok_or(PinError::NoName)?,
            retention,
            revisions,
        })
    }
}

impl fmt::Display for Pin {
    /// The file's text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Pin: {}", self.name)?;
        if let Some(n) = self.retention.keep_revisions {
            writeln!(f, "KeepRevisions: {n}")?;
        }
        if let Some(d) = self.retention.keep_days {
            writeln!(f, "KeepDays: {d}")?;
        }
        for revision in &self.revisions {
            writeln!(f, "\nRevision: {}", revision.number)?;
            writeln!(f, "Time: {}", revision.time)?;
            for root in &revision.roots {
                writeln!(f, "Root: {root}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::store_path::DEFAULT_STORE_DIR;

    const A: &str = "/nix/store/0c4l9ivaa1z6k0bjhl5hbnivl6ysw5qn-hello-2.12";
    const B: &str = "/nix/store/1b9p07z77phvv2hf6gm9f28syrdlh7bi-hello-2.11";

    fn path(p: &str) -> StorePath {
        StorePath::parse(p, DEFAULT_STORE_DIR).unwrap()
    }

    fn release(retention: Retention) -> Pin {
        let mut pin = Pin::new("release", retention).unwrap();
        pin.add_revision(1_000, vec![path(B)]);
        pin.add_revision(2_000, vec![path(A), path(B)]);
        pin
    }

    #[test]
    fn a_pin_is_written_newest_revision_first_and_read_back() {
        let pin = release(Retention {
            keep_revisions: Some(3),
            keep_days: Some(30),
        });
        let text = pin.to_string();
        assert_eq!(
            text,
            format!(
                "Pin: release\nKeepRevisions: 3\nKeepDays: 30\n\n\
                 Revision: 2\nTime: 2000\nRoot: {A}\nRoot: {B}\n\n\
                 Revision: 1\nTime: 1000\nRoot: {B}\n"
            )
        );
        assert_eq!(Pin::parse(&text, DEFAULT_STORE_DIR).unwrap(), pin);
    }

    #[test]
    fn merging_adds_the_revisions_the_published_pin_lacks_and_takes_our_policy() {
        let published = release(Retention::default());
        let mut ours = Pin::new(
            "release",
            Retention {
                keep_revisions: Some(1),
                keep_days: None,
            },
        )
        .unwrap();
        ours.add_revision(2_000, vec![path(A), path(B)]); // published already
        ours.add_revision(3_000, vec![path(A)]);
        let merged = published.merged_with(&ours);
        assert_eq!(merged.retention, ours.retention);
        let numbers: Vec<(u64, u64)> = merged
            .revisions
            .iter()
            .map(|r| (r.number, r.time))
            .collect();
        assert_eq!(numbers, [(3, 3_000), (2, 2_000), (1, 1_000)]);
        // Merging again adds nothing.
        assert_eq!(merged.merged_with(&ours), merged);
    }

    #[test]
    fn revision_numbers_go_on_from_the_newest() {
        let mut pin = release(Retention::default());
        pin.revisions.truncate(1);
        assert_eq!(pin.add_revision(3_000, vec![path(A)]), 3);
    }

    #[test]
    fn without_a_policy_every_revision_is_retained() {
        let pin = release(Retention::default());
        assert_eq!(pin.split(u64::MAX).1.len(), 0);
    }

    #[test]
    fn the_newest_revision_is_retained_whatever_its_age() {
        let pin = release(Retention {
            keep_revisions: None,
            keep_days: Some(1),
        });
        let (kept, dropped) = pin.split(100 * DAY);
        assert_eq!(kept.iter().map(|r| r.number).collect::<Vec<_>>(), [2]);
        assert_eq!(dropped.iter().map(|r| r.number).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_revision_is_retained_if_either_rule_keeps_it() {
        let pin = release(Retention {
            keep_revisions: Some(1),
            keep_days: Some(1),
        });
        // Both revisions are younger than a day: the age rule keeps the older.
        assert_eq!(pin.split(2_000 + DAY / 2).1.len(), 0);
        // A day after the older one: only the count rule applies, to the newest.
        assert_eq!(pin.split(1_000 + DAY).1.len(), 1);
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let text = format!("Pin: x\nColour: red\n\nRevision: 1\nTime: 5\nNote: hi\nRoot: {A}\n");
        assert_eq!(
            Pin::parse(&text, DEFAULT_STORE_DIR).unwrap().revisions[0].roots,
            [path(A)]
        );
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_line() {
        let cases = [
            ("Pin: x\nKeepRevisions: 0\n", "line 2: KeepRevisions is 0"),
            (
                "Pin: x\nKeepDays: soon\n",
                "line 2: KeepDays 'soon' is not a number",
            ),
            ("Pin: x\nPin: y\n", "line 2: 'Pin' appears twice"),
            ("Pin: .x\n", "line 1: '.x' is not a pin name"),
            (
                "Pin: x\nRoot: /nix/store/a\n",
                "line 2: 'Root' comes before any",
            ),
            (
                "Pin: x\nRevision: 1\nTime: 1\nRoot: /tmp/a\n",
                "line 4: '/tmp/a' is not a store path",
            ),
            (
                "Pin: x\nRevision: 1\nTime: 1\nRevision: 2\nTime: 1\n",
                "line 4: revision 2 comes after revision 1",
            ),
            (
                "Pin: x\nRevision: 2\nRevision: 1\nTime: 1\n",
                "revision 2 has no 'Time:' line",
            ),
            ("Pin: x\nRevision: 1\n", "revision 1 has no 'Time:' line"),
            (
                "Pin: x\nRevision: 1\nTime: 1\nKeepDays: 3\n",
                "line 4: 'KeepDays' belongs before",
            ),
            ("KeepDays: 3\n", "it has no 'Pin:' line"),
            ("Pin x\n", "line 1: 'Pin x' is not 'Key: value'"),
        ];
        for (text, expected) in cases {
            let error = Pin::parse(text, DEFAULT_STORE_DIR).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn pin_names_are_safe_file_names() {
        for good in ["release", "v1.2+next", "ci_main-x86_64"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(101)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_policy_reads_as_words() {
        let words = |keep_revisions, keep_days| {
            Retention {
                keep_revisions,
                keep_days,
            }
            .to_string()
        };
        assert_eq!(words(None, None), "every revision");
        assert_eq!(words(Some(1), None), "the newest 1 revision");
        assert_eq!(words(None, Some(30)), "revisions younger than 30 days");
        assert_eq!(
            words(Some(3), Some(1)),
            "the newest 3 revisions, and any younger than 1 day"
        );
    }
}
