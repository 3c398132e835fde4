//! One line for an error and its causes, as both programs print it.

/// The error and its causes on one line, `what failed: cause: cause`. Our
/// errors name their cause in their own message, so that they read well
/// alone, and so do some libraries' (the S3 client's repeat their source in
/// the middle): a cause the line already holds is not repeated.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line = format!("{line}: {cause}");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// An error that names its source in its own message, as ours do.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot write the NAR of '/nix/store/x/data': {source}")]
    struct Output {
        source: io::Error,
    }

    #[test]
    fn names_each_cause_once() {
        let output = Output {
            source: io::Error::other("No space left on device"),
        };
        let e = anyhow::Error::new(output).context("writing the cache to '/out'");
        assert_eq!(
            error_line(&e),
            "writing the cache to '/out': cannot write the NAR of '/nix/store/x/data': No space left on device"
        );
    }

    #[test]
    fn a_cause_the_message_does_not_name_is_added() {
        let e = anyhow::Error::new(io::Error::other("connection refused"))
            .context("uploading 'nar/x.nar.zst'");
        assert_eq!(
            error_line(&e),
            "uploading 'nar/x.nar.zst': connection refused"
        );
    }
}
