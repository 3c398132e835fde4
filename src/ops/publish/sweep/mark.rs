//! A mark: an object under `prune-marks/` naming the candidates a prune
//! found unreachable, with the terms under which a later prune may delete
//! them. The bucket's own timestamp of the object is when it was marked.
//!
//! The text is a head of `Name: value` lines (`Grace`, `SweepWithin`, in
//! seconds), an empty line, then one object name per line. A run writes at
//! most [`MAX_KEYS`] names to one mark, in as many marks as it needs, so
//! that a reader never holds more than a few megabytes of one.

/// The folder of the bucket's marks.
pub const MARKS: &str = "prune-marks";

/// The object a prune writes to learn the bucket's time.
pub(super) const CLOCK: &str = "prune-marks/clock";

/// The most names one mark holds (about 6 MB of text).
pub const MAX_KEYS: usize = 100_000;

/// A mark: when the bucket wrote it, its terms, and the names it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub name: String,
    /// By the bucket's clock, seconds since 1970.
    pub time: i64,
    pub grace: u64,
    pub sweep_within: u64,
    /// The names, one per line.
    body: String,
}

impl Mark {
    /// The mark's text: its terms, then one name per line.
    pub fn text<'a>(
        grace: u64,
        sweep_within: u64,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> String {
        let mut text = format!("Grace: {grace}\nSweepWithin: {sweep_within}\n\n");
        for key in keys {
            text.push_str(key);
            text.push('\n');
        }
        text
    }

    /// The name of the `n`th mark a run writes at bucket time `now`.
    pub fn object_name(now: i64, n: usize) -> String {
        format!("{MARKS}/{now}-{}-{n}", std::process::id())
    }

    /// Reads a mark's text; None if it is not one (then it is left alone).
    pub fn parse(name: &str, time: i64, mut text: String) -> Option<Mark> {
        let at = text.find("\n\n")?;
        let mut grace = None;
        let mut sweep_within = None;
        for line in text[..at].lines() {
            match line.split_once(": ")? {
                ("Grace", v) => grace = Some(v.parse().ok()?),
                ("SweepWithin", v) => sweep_within = Some(v.parse().ok()?),
                _ => {}
            }
        }
        let (grace, sweep_within) = (grace?, sweep_within?);
        text.drain(..at + 2);
        Some(Mark {
            name: name.to_owned(),
            time,
            grace,
            sweep_within,
            body: text,
        })
    }

    /// The names the mark holds.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.body.lines().filter(|l| !l.is_empty())
    }

    /// Whether a sweep at `now` may delete what this mark names.
    pub fn ripe(&self, now: i64) -> bool {
        now.saturating_sub(self.time) >= self.grace as i64
    }

    /// Whether the mark has done its work by `now`: its sweep is a grace
    /// period past, so every publish that listed the bucket before the
    /// sweep has learnt from it what to upload again.
    pub fn spent(&self, now: i64) -> bool {
        now.saturating_sub(self.time) >= 2 * self.grace as i64
    }

    /// Drops the names, once they are counted, keeping the terms.
    pub fn forget_keys(&mut self) {
        self.body = String::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_what_it_wrote_and_ripens_after_its_grace() {
        let keys = ["0c4l9ivaa1z6k0bjhl5hbnivl6ysw5qn.narinfo", "nar/x.nar"];
        let mark = Mark::parse("m", 100, Mark::text(60, 5, keys)).unwrap();
        assert_eq!(mark.keys().collect::<Vec<_>>(), keys);
        assert_eq!((mark.grace, mark.sweep_within), (60, 5));
        assert!(!mark.ripe(159));
        assert!(mark.ripe(160));
        assert!(!mark.spent(219));
        assert!(mark.spent(220));
        assert_eq!(Mark::parse("m", 0, "not a mark".to_owned()), None);
        assert_eq!(
            Mark::parse("m", 0, "Grace: x\nSweepWithin: 1\n\n".to_owned()),
            None
        );
    }
}
