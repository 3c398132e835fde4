//! Where a cache is published: Nix's URL of an S3 store,
//! `s3://BUCKET[/PREFIX]?region=…&endpoint=…&profile=…&scheme=…`.
//!
//! The parameters mean what they mean to Nix: `region` (default
//! `us-east-1`, or the profile's or the environment's), `endpoint` (an S3
//! compatible server: `host[:port]` or a URL; `scheme` is used when it has
//! none, `https` by default), `profile` (of the AWS shared files). Nix's
//! other parameters set how it writes a cache (`compression`,
//! `write-nar-listing`…); `publish` uploads a cache as it was built, so they
//! are refused rather than silently ignored.

use std::fmt;

use thiserror::Error;

/// A parsed `s3://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// Keys are `PREFIX/<file>`; empty for the bucket's root.
    pub prefix: String,
    pub region: Option<String>,
    /// With its scheme: `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub profile: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("'{0}' is not an s3:// URL (s3://BUCKET[/PREFIX]?region=…&endpoint=…&profile=…)")]
    NotS3(String),
    #[error("'{0}' names no bucket")]
    NoBucket(String),
    #[error(
        "'{url}': unknown parameter '{name}' (publish knows region, endpoint, profile and scheme)"
    )]
    UnknownParameter { url: String, name: String },
    #[error("'{url}': scheme must be http or https, not '{value}'")]
    BadScheme { url: String, value: String },
    #[error("'{0}' is not a valid URL: {1}")]
    Invalid(String, String),
}

impl Location {
    pub fn parse(text: &str) -> Result<Self, LocationError> {
        let url = url::Url::parse(text)
            .map_err(|e| LocationError::Invalid(text.to_string(), e.to_string()))?;
        if url.scheme() != "s3" {
            return Err(LocationError::NotS3(text.to_string()));
        }
        let bucket = url.host_str().unwrap_or_default().to_string();
        if bucket.is_empty() {
            return Err(LocationError::NoBucket(text.to_string()));
        }
        let prefix = url.path().trim_matches('/').to_string();
        let mut location = Location {
            bucket,
            prefix,
            region: None,
            endpoint: None,
            profile: None,
        };
        let mut scheme = None;
        for (name, value) in url.query_pairs() {
            let value = value.into_owned();
            match &*name {
                "region" => location.region = Some(value),
                "endpoint" => location.endpoint = Some(value),
                "profile" => location.profile = Some(value),
                "scheme" => {
                    if value != "http" && value != "https" {
                        return Err(LocationError::BadScheme {
                            url: text.to_string(),
                            value,
                        });
                    }
                    scheme = Some(value)
                }
                _ => {
                    return Err(LocationError::UnknownParameter {
                        url: text.to_string(),
                        name: name.into_owned(),
                    });
                }
            }
        }
        if let Some(endpoint) = &mut location.endpoint
            && !endpoint.contains("://")
        {
            *endpoint = format!("{}://{endpoint}", scheme.as_deref().unwrap_or("https"));
        }
        Ok(location)
    }

    /// The key of `file` (a path relative to the cache's root).
    pub fn key(&self, file: &str) -> String {
        if self.prefix.is_empty() {
            file.to_string()
        } else {
            format!("{}/{file}", self.prefix)
        }
    }
}

impl fmt::Display for Location {
    /// `s3://BUCKET/PREFIX`, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}", self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_with_a_prefix_and_nix_s_parameters() {
        let l = Location::parse(
            "s3://cache/team/x86?region=eu-west-1&endpoint=minio.lan:9000&scheme=http&profile=ci",
        )
        .unwrap();
        assert_eq!(l.bucket, "cache");
        assert_eq!(l.prefix, "team/x86");
        assert_eq!(l.region.as_deref(), Some("eu-west-1"));
        assert_eq!(l.endpoint.as_deref(), Some("http://minio.lan:9000"));
        assert_eq!(l.profile.as_deref(), Some("ci"));
        assert_eq!(l.key("nix-cache-info"), "team/x86/nix-cache-info");
        assert_eq!(l.to_string(), "s3://cache/team/x86");
    }

    #[test]
    fn an_endpoint_without_scheme_is_https_as_in_nix() {
        let l = Location::parse("s3://cache?endpoint=s3.example.org").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("https://s3.example.org"));
        assert_eq!(l.key("nar/x.nar"), "nar/x.nar");
    }

    #[test]
    fn an_endpoint_with_scheme_is_kept() {
        let l = Location::parse("s3://b?endpoint=http://127.0.0.1:9000").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    }

    #[test]
    fn settings_of_how_nix_writes_a_cache_are_refused() {
        assert_eq!(
            Location::parse("s3://b?compression=xz"),
            Err(LocationError::UnknownParameter {
                url: "s3://b?compression=xz".into(),
                name: "compression".into()
            })
        );
    }

    #[test]
    fn other_schemes_and_missing_buckets_are_refused() {
        assert!(matches!(
            Location::parse("file:///srv/cache"),
            Err(LocationError::NotS3(_))
        ));
        assert!(matches!(
            Location::parse("s3:///prefix"),
            Err(LocationError::NoBucket(_) | LocationError::Invalid(..))
        ));
    }
}
