//! The arguments of `publish`, defined once for both programs that parse
//! them: `mk-binary-cache-publish` (`src/bin/publish.rs`), which uploads, and
//! `mk-binary-cache publish` (`src/main.rs`), which checks them, shows their
//! help even where the publisher is not installed, and hands over to it.
//! Included by `#[path]` into each binary: the library stays free of clap.

use std::path::PathBuf;

/// What `publish` does, for the long help of either program.
pub const LONG_ABOUT: &str = "\
Upload a cache to S3-compatible object storage.

Uploads a flat-file Nix binary cache, byte for byte, in an order that is safe \
for readers at every moment: NARs and other files first, then each narinfo \
after those of its references, then `store-paths`. Files already there are \
skipped; a run that is interrupted is completed by the next.

Credentials are found as the AWS tools find them: the URL's profile, else \
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, else the profile AWS_PROFILE \
names (or `default`) in ~/.aws/credentials and ~/.aws/config.";

/// Examples, for the help of either program.
pub const EXAMPLES: &str = "\
Examples:
  mk-binary-cache publish ./cache 's3://my-cache?region=eu-west-1'
  mk-binary-cache publish ./cache \\
      's3://my-cache/nix?endpoint=http://minio.example.org:9000'";

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// The flat-file cache to upload (a mkBinaryCache output, or a
    /// `build --to` directory).
    #[arg(value_name = "CACHE")]
    pub cache: PathBuf,
    /// Where to: `s3://BUCKET[/PREFIX]?PARAMETERS`, the URL Nix uses for
    /// the same bucket, with parameters joined by `&`: `region=R`,
    /// `endpoint=https://HOST[:PORT]`, `profile=P`,
    /// `addressing-style=auto|path|virtual`, `storage-class=CLASS`.
    #[arg(value_name = "URL")]
    pub url: String,
    /// Replace narinfos in the bucket that differ from the cache's (by
    /// default that is an error, and nothing is uploaded).
    #[arg(long)]
    pub force: bool,
    /// Files uploaded at once (1 to 256); each has at most two requests in
    /// flight.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 8,
          value_parser = |s: &str| in_range(s, 1, 256))]
    pub jobs: u16,
    /// Files larger than this many MiB go up in parts of this size (5 to
    /// 4096).
    #[arg(long, value_name = "MiB", default_value_t = 8,
          value_parser = |s: &str| in_range(s, 5, 4096))]
    pub part_size: u16,
    /// Do not upload a path whose narinfo has a signature by key NAME (e.g.
    /// cache.nixos.org-1): its cache serves it. Repeatable.
    #[arg(long, value_name = "NAME")]
    pub upstream_key: Vec<String>,
    /// Do not upload a path whose narinfo the cache at URL (file://,
    /// http://, https://, s3://) serves. Repeatable.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstreams: Vec<String>,
    /// Take an --upstream that does not answer (network failure, timeout,
    /// server error, after retries) as serving nothing, instead of failing.
    #[arg(long)]
    pub unreachable_upstream_is_empty: bool,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// A number from `min` to `max`, said in words when it is not.
fn in_range(text: &str, min: u16, max: u16) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}
