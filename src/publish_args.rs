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

/// What `mk-binary-cache-publish prune` (and `mk-binary-cache prune
/// s3://…`) does, for its long help.
#[allow(dead_code)] // mk-binary-cache-publish's only
pub const PRUNE_LONG_ABOUT: &str = "\
Prune a published cache by mark, wait and sweep.

Deletes what neither `store-paths` nor the revisions its pins retain keep, \
safe while others publish to the same bucket: an object goes only if it was \
unreachable when a run marked it and still is at a run after the grace \
period. So run it regularly (daily, say); `mk-binary-cache prune s3://…` \
runs it too.";

/// Examples of `prune`, for its help.
#[allow(dead_code)] // mk-binary-cache-publish's only
pub const PRUNE_EXAMPLES: &str = "\
Examples:
  mk-binary-cache-publish prune --dry-run 's3://my-cache?region=eu-west-1'
  mk-binary-cache-publish prune --grace 172800 's3://my-cache?region=eu-west-1'";

/// The arguments of `mk-binary-cache-publish prune`.
#[derive(clap::Args, Debug)]
#[allow(dead_code)] // mk-binary-cache-publish's only
pub struct PruneArgs {
    /// The bucket: `s3://BUCKET[/PREFIX]?PARAMETERS`, as for publishing.
    #[arg(value_name = "URL")]
    pub url: String,
    /// How long an object must stay unreachable after it is marked before
    /// it is deleted, in seconds (default: a day). Publishes that take
    /// longer than this, less a minute, are not protected.
    #[arg(long, value_name = "SECONDS")]
    pub grace: Option<u64>,
    /// A sweep stops after this many seconds (default: 600; the rest waits
    /// for the next run); a publish that finds what it needs marked waits
    /// this long.
    #[arg(long, value_name = "SECONDS")]
    pub sweep_within: Option<u64>,
    /// Say what would be deleted and marked, in objects and bytes, and the
    /// requests it would take; write and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune even if no root is listed in store-paths or a pin (which
    /// deletes every path).
    #[arg(long)]
    pub allow_no_roots: bool,
    /// Print only the summary, not what each pin retains and drops.
    #[arg(long, short = 's')]
    pub summary: bool,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}
