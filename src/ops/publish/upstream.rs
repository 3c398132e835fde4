//! Asking upstream caches over the network which paths they serve: the
//! `http://`, `https://` and `s3://` half of `--upstream URL`
//! (`input::upstream` reads `file://` ones and decides). Here because the
//! HTTP client and its runtime must stay out of the static builder, which
//! asks through `mk-binary-cache-publish --query-upstream`.
//!
//! One upstream is asked for its `nix-cache-info` first (it must exist and
//! be for the same store directory: an address that is not a binary cache is
//! an error, not an empty one), then for each path's narinfo, with at most
//! `jobs` requests in flight. The client retries connection errors, timeouts
//! and server errors with exponential backoff, and gives each request a
//! timeout; what still fails is [`UpstreamError::Unreachable`]. A `404` (or
//! S3's NoSuchKey) means the path is not there; a `200` counts only if its
//! body is a narinfo of the same store path.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::http::HttpBuilder;
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use super::bucket::Bucket;
use super::{DEFAULT_PART_SIZE, Location, ProcessEnvironment, credentials};
use crate::format::cache_info;
use crate::format::narinfo;
use crate::format::store_path::StorePath;
use crate::input::upstream::{QUERY_PROGRAM, UpstreamError, check_cache_info, is_narinfo_of};

/// Requests in flight to one upstream, by default.
pub const DEFAULT_JOBS: usize = 16;

/// An upstream cache over the network.
struct Upstream {
    url: String,
    store: Arc<dyn ObjectStore>,
    /// The key of a file of the cache (an S3 URL's prefix included).
    key: Box<dyn Fn(&str) -> Key + Send + Sync>,
}

impl Upstream {
    fn open(url: &str) -> Result<Upstream, UpstreamError> {
        let query_error = |message: String| UpstreamError::Query {
            url: url.to_owned(),
            message,
        };
        if url.starts_with("s3://") {
            let location = Location::parse(url).map_err(|e| query_error(format!("{e}")))?;
            for warning in &location.warnings {
                eprintln!("{QUERY_PROGRAM}: warning: {warning}");
            }
            let credentials =
                credentials::resolve(location.profile.as_deref(), &ProcessEnvironment)
                    .map_err(|e| query_error(format!("{e}")))?;
            let bucket = Bucket::open(&location, credentials, DEFAULT_PART_SIZE)
                .map_err(|e| query_error(format!("{e}")))?;
            let store = Arc::clone(&bucket.store);
            return Ok(Upstream {
                url: url.to_owned(),
                store,
                key: Box::new(move |name| bucket.key(name)),
            });
        }
        let store = HttpBuilder::new()
            .with_url(url.trim_end_matches('/'))
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(url.starts_with("http://"))
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(30)),
            )
            .build()
            .map_err(|e| query_error(format!("{e}")))?;
        Ok(Upstream {
            url: url.to_owned(),
            store: Arc::new(store),
            key: Box::new(|name| Key::from(name)),
        })
    }

    /// The file `name`, if the upstream has it; None if it has not. More
    /// than `limit` bytes is an error.
    async fn get(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, UpstreamError> {
        let unreachable = |e: object_store::Error| UpstreamError::Unreachable {
            url: self.url.clone(),
            message: format!("{name}: {e}"),
        };
        let result = match self.store.get(&(self.key)(name)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(unreachable(e)),
        };
        if result.meta.size > limit {
            // No narinfo or nix-cache-info is that large: not a cache.
            return Err(UpstreamError::Query {
                url: self.url.clone(),
                message: format!("{name} is {} bytes, more than {limit}", result.meta.size),
            });
        }
        let bytes = result.bytes().await.map_err(unreachable)?;
        Ok(Some(bytes.to_vec()))
    }
}

/// Which of `paths` the cache at `url` (`http(s)://` or `s3://`) serves, one
/// answer per path, with at most `jobs` requests in flight.
pub fn serves(
    url: &str,
    paths: &[&StorePath],
    store_dir: &str,
    jobs: usize,
) -> Result<Vec<bool>, UpstreamError> {
    let upstream = Upstream::open(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| UpstreamError::Query {
            url: url.to_owned(),
            message: format!("starting the async runtime: {e}"),
        })?;
    runtime.block_on(async {
        let info = upstream
            .get(cache_info::FILE_NAME, narinfo::MAX_SIZE)
            .await?
            .ok_or_else(|| UpstreamError::Query {
                url: url.to_owned(),
                message: format!(
                    "it has no {}: it is not a binary cache",
                    cache_info::FILE_NAME
                ),
            })?;
        check_cache_info(url, &String::from_utf8_lossy(&info), store_dir)?;
        futures::stream::iter(paths)
            .map(|path| {
                let upstream = &upstream;
                async move {
                    let name = narinfo::file_name(path.hash_part());
                    let answer = upstream.get(&name, narinfo::MAX_SIZE).await?;
                    Ok(answer.is_some_and(|bytes| is_narinfo_of(&bytes, path, store_dir)))
                }
            })
            .buffered(jobs.max(1))
            .collect::<Vec<Result<bool, UpstreamError>>>()
            .await
            .into_iter()
            .collect()
    })
}
