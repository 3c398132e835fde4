//! The bucket side of a publish: the S3 client, and how objects are put,
//! compared and named.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use object_store::aws::S3ConditionalPut;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, UpdateVersion, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use super::plan::File;
use super::{Credentials, Location, PublishError, content_type};

/// An object's bytes and its ETag (if the store gives one); None if it is
/// not there.
pub type Tagged = Option<(Vec<u8>, Option<String>)>;

/// The bucket, and how to name things in messages.
pub(super) struct Bucket {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) location: Location,
    pub(super) credentials: String,
    pub(super) part_size: usize,
}

impl Bucket {
    pub(super) fn open(
        location: &Location,
        credentials: Option<Credentials>,
        part_size: usize,
    ) -> Result<Bucket, PublishError> {
        // The bucket's address is the one Nix computes from the URL
        // (`Location::bucket_url`), handed over whole: to `object_store`, an
        // endpoint with virtual-hosted requests is the bucket's own address,
        // used as it is. The environment's `AWS_ENDPOINT_URL_S3`, which
        // would take precedence over it, and `AWS_S3_EXPRESS` are overridden:
        // Nix reads neither, and the URL must mean one bucket to both.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&location.bucket)
            .with_region(&location.region)
            .with_endpoint(&location.bucket_url)
            .with_config(AmazonS3ConfigKey::S3Endpoint, &location.bucket_url)
            .with_virtual_hosted_style_request(true)
            .with_s3_express(false)
            // `If-Match` / `If-None-Match` on a PUT: the root files are
            // compare-and-swapped (`super::roots`), whatever the environment
            // says.
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: 10,
                retry_timeout: Duration::from_secs(180),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300))
                    .with_allow_http(location.bucket_url.starts_with("http://")),
            );
        let credentials = match &credentials {
            Some(c) => {
                builder = builder
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(&c.secret_access_key);
                if let Some(token) = &c.session_token {
                    builder = builder.with_token(token);
                }
                format!("credentials from {}", c.source)
            }
            None => "credentials from the instance, container or web identity".to_string(),
        };
        let store = builder.build().map_err(|source| PublishError::Store {
            what: "opening",
            url: location.to_string(),
            key: String::new(),
            credentials: credentials.clone(),
            source: Box::new(source),
        })?;
        Ok(Bucket {
            store: Arc::new(store),
            location: location.clone(),
            credentials,
            // S3's smallest part, but for the last.
            part_size: part_size.max(5 << 20),
        })
    }

    pub(super) fn key(&self, name: &str) -> Key {
        Key::from(self.location.key(name))
    }

    pub(super) fn error(
        &self,
        what: &'static str,
        name: &str,
        source: object_store::Error,
    ) -> PublishError {
        PublishError::Store {
            what,
            url: self.location.to_string(),
            key: if name.is_empty() {
                String::new()
            } else {
                format!("/{name}")
            },
            credentials: self.credentials.clone(),
            source: Box::new(source),
        }
    }

    /// Every object under the prefix: name (relative to it) -> (size, ETag).
    pub(super) async fn list(
        &self,
    ) -> Result<HashMap<String, (u64, Option<String>)>, PublishError> {
        let prefix = (!self.location.prefix.is_empty()).then(|| Key::from(&*self.location.prefix));
        let strip = if self.location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.location.prefix)
        };
        let metas: Vec<_> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.error("listing", "", e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some((name, (m.size, m.e_tag)))
            })
            .collect())
    }

    /// Every object under `sub` (a folder of the cache, or "" for all):
    /// name relative to the cache's prefix, size and last modification (in
    /// seconds since 1970, by the bucket's clock). One listing, in pages;
    /// each object is handed to `each` as it comes, so that nothing but what
    /// `each` keeps is held.
    pub(super) async fn list_each(
        &self,
        sub: &str,
        mut each: impl FnMut(String, u64, i64),
    ) -> Result<(), PublishError> {
        let full = self.location.key(sub);
        let full = full.trim_end_matches('/');
        let prefix = (!full.is_empty()).then(|| Key::from(full));
        let strip = if self.location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.location.prefix)
        };
        let mut stream = self.store.list(prefix.as_ref());
        while let Some(meta) = stream
            .try_next()
            .await
            .map_err(|e| self.error("listing", sub, e))?
        {
            if let Some(name) = meta.location.as_ref().strip_prefix(&strip) {
                each(name.to_string(), meta.size, meta.last_modified.timestamp());
            }
        }
        Ok(())
    }

    /// When the bucket last wrote `name`, by its own clock (seconds since
    /// 1970); None if it is not there.
    pub(super) async fn modified(&self, name: &str) -> Result<Option<i64>, PublishError> {
        match self.store.head(&self.key(name)).await {
            Ok(meta) => Ok(Some(meta.last_modified.timestamp())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("reading", name, e)),
        }
    }

    /// Deletes `names` in `DeleteObjects` requests of up to 1,000 keys;
    /// returns how many requests that took.
    pub(super) async fn delete_all(&self, names: &[String]) -> Result<usize, PublishError> {
        let mut requests = 0;
        for batch in names.chunks(1000) {
            let keys: Vec<object_store::Result<Key>> =
                batch.iter().map(|n| Ok(self.key(n))).collect();
            let mut deleted = self
                .store
                .delete_stream(Box::pin(futures::stream::iter(keys)));
            while let Some(result) = deleted.next().await {
                match result {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.error("deleting from", &batch[0], e)),
                }
            }
            requests += 1;
        }
        Ok(requests)
    }

    pub(super) async fn get(&self, name: &str) -> Result<Vec<u8>, PublishError> {
        let result = self
            .store
            .get(&self.key(name))
            .await
            .map_err(|e| self.error("reading", name, e))?;
        let bytes = result
            .bytes()
            .await
            .map_err(|e| self.error("reading", name, e))?;
        Ok(bytes.to_vec())
    }

    /// `name`'s bytes and its ETag (if the store gives one), to change it by
    /// [`Bucket::put_if`]; None if it is not there.
    pub(super) async fn get_tagged(&self, name: &str) -> Result<Tagged, PublishError> {
        let result = match self.store.get(&self.key(name)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("reading", name, e)),
        };
        let etag = result.meta.e_tag.clone();
        let bytes = result
            .bytes()
            .await
            .map_err(|e| self.error("reading", name, e))?;
        Ok(Some((bytes.to_vec(), etag)))
    }

    /// Puts `bytes` as `name` only if the object there is still the one
    /// read: the one with ETag `read` (`If-Match`), or none at all when
    /// `read` is None (`If-None-Match: *`). Ok(false) if another writer
    /// changed it first; a store that does not do conditional writes is an
    /// error, never an unconditional write.
    pub(super) async fn put_if(
        &self,
        name: &str,
        bytes: Vec<u8>,
        read: Option<&str>,
    ) -> Result<bool, PublishError> {
        let options = PutOptions {
            mode: match read {
                None => PutMode::Create,
                Some(etag) => PutMode::Update(UpdateVersion {
                    e_tag: Some(etag.to_owned()),
                    version: None,
                }),
            },
            attributes: self.attributes(name),
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.key(name), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(false),
            Err(e) if not_implemented(&e) => Err(PublishError::NoConditionalPut {
                url: self.location.to_string(),
                name: name.to_owned(),
                source: Box::new(e),
            }),
            Err(e) => Err(self.error("uploading to", name, e)),
        }
    }

    /// The headers of an upload of `name` (a single one, or the start of a
    /// multipart one, whose parts inherit them): its content type, and the
    /// URL's storage class.
    fn attributes(&self, name: &str) -> Attributes {
        let mut attributes = Attributes::from_iter([(Attribute::ContentType, content_type(name))]);
        if let Some(class) = &self.location.storage_class {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        attributes
    }

    pub(super) async fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), PublishError> {
        let options = PutOptions {
            attributes: self.attributes(name),
            ..Default::default()
        };
        self.store
            .put_opts(&self.key(name), PutPayload::from(bytes), options)
            .await
            .map_err(|e| self.error("uploading to", name, e))?;
        Ok(())
    }

    /// Uploads a file, in parts if it is larger than one.
    pub(super) async fn put_file(&self, file: &File) -> Result<(), PublishError> {
        let io = |source| PublishError::Io {
            path: file.path.clone(),
            source,
        };
        if file.size <= self.part_size as u64 {
            let bytes = tokio::fs::read(&file.path).await.map_err(io)?;
            return self.put_bytes(&file.name, bytes).await;
        }
        let options = PutMultipartOptions {
            attributes: self.attributes(&file.name),
            ..Default::default()
        };
        let upload = self
            .store
            .put_multipart_opts(&self.key(&file.name), options)
            .await
            .map_err(|e| self.error("starting the upload of", &file.name, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut source = tokio::fs::File::open(&file.path).await.map_err(io)?;
        let mut buffer = vec![0; 1 << 20];
        let sent = async {
            loop {
                // At most two parts of this file in flight: memory stays
                // within a few parts per file, however large the NAR.
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|e| self.error("uploading a part of", &file.name, e))?;
                let n = source.read(&mut buffer).await.map_err(io)?;
                if n == 0 {
                    return Ok(());
                }
                writer.write(&buffer[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| self.error("completing the upload of", &file.name, e))?;
                Ok(())
            }
            Err(e) => {
                // An incomplete upload is invisible to readers; aborting it
                // frees its parts (a bucket lifecycle rule does it too).
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

/// Whether `error` says that the store does not do what was asked: the
/// client's own refusal, or the server's `501 Not Implemented` (S3's
/// answer to a header it does not know).
pub(super) fn not_implemented(error: &object_store::Error) -> bool {
    if matches!(error, object_store::Error::NotImplemented { .. }) {
        return true;
    }
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if text.contains("501 Not Implemented") || text.contains("<Code>NotImplemented</Code>") {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The MD5 of `bytes` in hex: the ETag S3 gives a single-part upload.
pub(super) fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether an object with ETag `etag` holds `bytes`: Some(answer) when the
/// ETag is an MD5, None when only reading it back can tell.
pub(super) fn same_by_etag(etag: Option<&str>, bytes: &[u8]) -> Option<bool> {
    let etag = etag?.trim_matches('"');
    (etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| etag.eq_ignore_ascii_case(&md5_hex(bytes)))
}
