//! Where a cache is published: Nix's URL of an S3 store,
//! `s3://BUCKET[/PREFIX]?region=…&endpoint=…&addressing-style=…&profile=…&storage-class=…`,
//! and the bucket's HTTP address that URL means to Nix (2.33 to 2.36).
//!
//! The parameters mean what they mean to Nix:
//! - `region`: the bucket's; `us-east-1` when absent. Nix reads no other
//!   source (not `AWS_REGION`, not the profile's), and neither does this.
//! - `endpoint`: an S3-compatible server, as a URL (`http://host:port`,
//!   with an optional path). The forms Nix 2.36 deprecates, a bare
//!   `host[:port]` (then `scheme=`, default `https`, gives the scheme) and
//!   `scheme=` itself, are taken with a warning that says what to write.
//! - `addressing-style`: `auto` (the default), `path` or `virtual`. `auto`
//!   is virtual-hosted (`BUCKET.s3.REGION.amazonaws.com`) without an
//!   endpoint and path-style (`ENDPOINT/BUCKET`) with one; a bucket name
//!   with a dot falls back to path-style (with a warning), and is an error
//!   with `virtual`. Virtual-hosted with an endpoint puts the bucket in
//!   front of the endpoint's host name.
//! - `profile`: of the AWS shared files (see `credentials.rs`).
//! - `storage-class`: sent as `x-amz-storage-class` with every upload.
//!
//! Nix's other parameters set how it writes a cache (`compression`,
//! `write-nar-listing`, `multipart-upload`…); `publish` uploads a cache as it
//! was built, so they are refused, as is any parameter Nix does not know,
//! rather than silently ignored.

use std::fmt;

use thiserror::Error;
use url::{Host, Url};

/// The region Nix uses when the URL names none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The parameters `publish` takes, for messages.
const KNOWN: &str = "region, endpoint, addressing-style, profile, storage-class and scheme";

/// A parsed `s3://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// Keys are `PREFIX/<file>`; empty for the bucket's root.
    pub prefix: String,
    /// The URL's `region=`, else [`DEFAULT_REGION`].
    pub region: String,
    pub profile: Option<String>,
    /// Sent with every upload, multipart ones included; None leaves it to
    /// the bucket's default.
    pub storage_class: Option<String>,
    /// The address of the bucket's root, without a final `/`: a key `K` is
    /// at `{bucket_url}/K`. Virtual-hosted (`https://BUCKET.s3.REGION.amazonaws.com`)
    /// or path-style (`http://127.0.0.1:9000/BUCKET`) as Nix chooses.
    pub bucket_url: String,
    /// What the URL should say instead of a deprecated form, and the
    /// fall-back of a dotted bucket name; at most one of each kind, for the
    /// caller to print.
    pub warnings: Vec<Warning>,
}

/// How the bucket is named in requests, as the URL asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressingStyle {
    /// Virtual-hosted without an endpoint, path-style with one.
    Auto,
    Path,
    Virtual,
}

/// Something the URL says that works but should be said otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// `endpoint=host[:port]`: deprecated by Nix 2.36 (which also mended its
    /// parsing: 2.33 to 2.35 read the `host` of `host:port` as a URL scheme).
    BareEndpoint {
        given: String,
        /// The endpoint as a URL, with the scheme it is used with.
        write: String,
        /// `scheme=` came with it, and is folded into `write`.
        with_scheme: bool,
    },
    /// `scheme=` without an endpoint: `write` is the parameters that say
    /// the same.
    Scheme { scheme: String, write: String },
    /// `scheme=` with an endpoint URL, whose own scheme Nix uses.
    SchemeIgnored { scheme: String, endpoint: String },
    /// A dotted bucket name under `auto`, addressed path-style.
    DottedBucket { bucket: String },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::BareEndpoint {
                given,
                write,
                with_scheme,
            } => {
                write!(
                    f,
                    "endpoint={given} has no scheme, a form Nix 2.36 deprecates"
                )?;
                if given.contains(':') {
                    // Nix 2.33 to 2.35 take the host as a URL scheme.
                    write!(f, " and Nix 2.33 to 2.35 misread")?;
                }
                write!(f, ": write endpoint={write}")?;
                if *with_scheme {
                    write!(f, " and drop scheme=")?;
                }
                Ok(())
            }
            Warning::Scheme { scheme, write } => write!(
                f,
                "scheme={scheme} is deprecated since Nix 2.36: write {write} instead"
            ),
            Warning::SchemeIgnored { scheme, endpoint } => write!(
                f,
                "scheme={scheme} is deprecated since Nix 2.36, and ignored: \
                 endpoint={endpoint} gives the scheme; drop scheme="
            ),
            Warning::DottedBucket { bucket } => write!(
                f,
                "the bucket name '{bucket}' has a dot, so it is addressed path-style \
                 (a virtual-hosted name with a dot fails TLS certificate checks), as Nix does; \
                 add addressing-style=path to say so"
            ),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("'{0}' is not an s3:// URL (s3://BUCKET[/PREFIX]?region=…&endpoint=…)")]
    NotS3(String),
    #[error("'{0}' names no bucket")]
    NoBucket(String),
    #[error("'{url}': unknown parameter '{name}' (publish takes {KNOWN})")]
    UnknownParameter { url: String, name: String },
    #[error("'{url}': the parameter '{name}' is given twice")]
    Repeated { url: String, name: String },
    #[error("'{url}': the parameter '{name}' is empty")]
    Empty { url: String, name: String },
    #[error("'{url}': scheme must be http or https, not '{value}'")]
    BadScheme { url: String, value: String },
    #[error("'{url}': addressing-style must be auto, path or virtual, not '{value}'")]
    BadAddressingStyle { url: String, value: String },
    #[error("'{url}': endpoint '{endpoint}' {problem} (write a URL: endpoint=https://HOST[:PORT])")]
    BadEndpoint {
        url: String,
        endpoint: String,
        problem: String,
    },
    #[error(
        "'{url}': storage-class '{}' is not a storage class name (letters, digits and _ only, as STANDARD_IA)", .value.escape_debug()
    )]
    BadStorageClass { url: String, value: String },
    #[error(
        "'{url}': the bucket name '{bucket}' has a dot, which virtual-hosted addressing cannot \
         name (TLS certificate checks fail): use addressing-style=path or auto"
    )]
    VirtualDottedBucket { url: String, bucket: String },
    #[error(
        "'{url}': virtual-hosted addressing puts the bucket in front of the endpoint's host \
         name, and '{host}' is an IP address: use a host name, or addressing-style=path"
    )]
    VirtualIpEndpoint { url: String, host: String },
    #[error("'{0}' is not a valid URL: {1}")]
    Invalid(String, String),
}

/// The URL's parameters, each at most once.
#[derive(Default)]
struct Parameters {
    region: Option<String>,
    endpoint: Option<String>,
    addressing_style: Option<String>,
    profile: Option<String>,
    storage_class: Option<String>,
    scheme: Option<String>,
}

impl Parameters {
    fn parse(text: &str, url: &Url) -> Result<Parameters, LocationError> {
        let mut parameters = Parameters::default();
        for (name, value) in url.query_pairs() {
            let slot = match &*name {
                "region" => &mut parameters.region,
                "endpoint" => &mut parameters.endpoint,
                "addressing-style" => &mut parameters.addressing_style,
                "profile" => &mut parameters.profile,
                "storage-class" => &mut parameters.storage_class,
                "scheme" => &mut parameters.scheme,
                _ => {
                    return Err(LocationError::UnknownParameter {
                        url: text.to_string(),
                        name: name.into_owned(),
                    });
                }
            };
            let (url, name) = (text.to_string(), name.into_owned());
            if value.is_empty() {
                return Err(LocationError::Empty { url, name });
            }
            if slot.is_some() {
                return Err(LocationError::Repeated { url, name });
            }
            *slot = Some(value.into_owned());
        }
        Ok(parameters)
    }
}

impl Location {
    pub fn parse(text: &str) -> Result<Self, LocationError> {
        let url =
            Url::parse(text).map_err(|e| LocationError::Invalid(text.into(), e.to_string()))?;
        if url.scheme() != "s3" {
            return Err(LocationError::NotS3(text.to_string()));
        }
        let bucket = url.host_str().unwrap_or_default().to_string();
        if bucket.is_empty() {
            return Err(LocationError::NoBucket(text.to_string()));
        }
        let prefix = url.path().trim_matches('/').to_string();
        let parameters = Parameters::parse(text, &url)?;
        let region = parameters
            .region
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let style = match parameters.addressing_style.as_deref() {
            None | Some("auto") => AddressingStyle::Auto,
            Some("path") => AddressingStyle::Path,
            Some("virtual") => AddressingStyle::Virtual,
            Some(value) => {
                return Err(LocationError::BadAddressingStyle {
                    url: text.to_string(),
                    value: value.to_string(),
                });
            }
        };
        if let Some(scheme) = &parameters.scheme
            && scheme != "http"
            && scheme != "https"
        {
            return Err(LocationError::BadScheme {
                url: text.to_string(),
                value: scheme.clone(),
            });
        }
        if let Some(class) = &parameters.storage_class
            && !class
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(LocationError::BadStorageClass {
                url: text.to_string(),
                value: class.clone(),
            });
        }

        let mut warnings = Vec::new();
        let endpoint = match &parameters.endpoint {
            Some(given) => Some(endpoint_url(
                text,
                given,
                parameters.scheme.as_deref(),
                &mut warnings,
            )?),
            None => None,
        };
        let mut virtual_hosted = match (style, &endpoint) {
            (AddressingStyle::Virtual, _) | (AddressingStyle::Auto, None) => true,
            (AddressingStyle::Path, _) | (AddressingStyle::Auto, Some(_)) => false,
        };
        if virtual_hosted && bucket.contains('.') {
            if style == AddressingStyle::Virtual {
                return Err(LocationError::VirtualDottedBucket {
                    url: text.to_string(),
                    bucket,
                });
            }
            warnings.push(Warning::DottedBucket {
                bucket: bucket.clone(),
            });
            virtual_hosted = false;
        }
        // Without an endpoint, AWS's for the region, in the scheme asked.
        let base = match endpoint {
            Some(endpoint) => endpoint,
            None => {
                let scheme = parameters.scheme.as_deref().unwrap_or("https");
                let aws = format!("{scheme}://s3.{region}.amazonaws.com");
                if parameters.scheme.is_some() {
                    let mut write = format!("endpoint={aws}");
                    if virtual_hosted {
                        write.push_str("&addressing-style=virtual");
                    }
                    warnings.push(Warning::Scheme {
                        scheme: scheme.to_string(),
                        write,
                    });
                }
                Url::parse(&aws).map_err(|e| LocationError::Invalid(text.into(), e.to_string()))?
            }
        };
        let bucket_url = bucket_url(text, &base, &bucket, virtual_hosted)?;
        Ok(Location {
            bucket,
            prefix,
            region,
            profile: parameters.profile,
            storage_class: parameters.storage_class,
            bucket_url,
            warnings,
        })
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

/// The endpoint as a URL: `given` if it is one, else `given` as the host
/// and port of one in `scheme` (deprecated, with a warning).
fn endpoint_url(
    text: &str,
    given: &str,
    scheme: Option<&str>,
    warnings: &mut Vec<Warning>,
) -> Result<Url, LocationError> {
    let bad = |problem: &str| LocationError::BadEndpoint {
        url: text.to_string(),
        endpoint: given.to_string(),
        problem: problem.to_string(),
    };
    let full = given.contains("://");
    let written = if full {
        given.to_string()
    } else {
        format!("{}://{given}", scheme.unwrap_or("https"))
    };
    let endpoint = Url::parse(&written).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(endpoint.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL"));
    }
    if endpoint.host_str().is_none_or(str::is_empty) {
        return Err(bad("names no host"));
    }
    if endpoint.query().is_some() || endpoint.fragment().is_some() {
        return Err(bad("has a query or fragment"));
    }
    if !endpoint.username().is_empty() || endpoint.password().is_some() {
        return Err(bad(
            "has a user name or password (credentials go in the AWS files or environment)",
        ));
    }
    if full {
        if let Some(scheme) = scheme {
            warnings.push(Warning::SchemeIgnored {
                scheme: scheme.to_string(),
                endpoint: given.to_string(),
            });
        }
    } else {
        // Nix reads a bare endpoint as a host and port, nothing more.
        if endpoint.path() != "/" {
            return Err(bad("is a host[:port] with more after it"));
        }
        warnings.push(Warning::BareEndpoint {
            given: given.to_string(),
            write: written.clone(),
            with_scheme: scheme.is_some(),
        });
    }
    Ok(endpoint)
}

/// The bucket's root under `base` (an endpoint): `base/BUCKET`, or, virtual
/// hosted, `base` with `BUCKET.` in front of its host name.
fn bucket_url(
    text: &str,
    base: &Url,
    bucket: &str,
    virtual_hosted: bool,
) -> Result<String, LocationError> {
    let mut url = base.clone();
    if virtual_hosted {
        let host = match base.host() {
            Some(Host::Domain(name)) => name.to_string(),
            other => {
                return Err(LocationError::VirtualIpEndpoint {
                    url: text.to_string(),
                    host: other.map(|h| h.to_string()).unwrap_or_default(),
                });
            }
        };
        url.set_host(Some(&format!("{bucket}.{host}")))
            .map_err(|e| LocationError::Invalid(text.into(), e.to_string()))?;
    } else {
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .push(bucket);
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
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

    fn parse(text: &str) -> Location {
        Location::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_bucket_with_a_prefix_and_nix_s_parameters() {
        let l = parse(
            "s3://cache/team/x86?region=eu-west-1&endpoint=http://minio.lan:9000\
             &profile=ci&storage-class=STANDARD_IA",
        );
        assert_eq!(l.bucket, "cache");
        assert_eq!(l.prefix, "team/x86");
        assert_eq!(l.region, "eu-west-1");
        assert_eq!(l.profile.as_deref(), Some("ci"));
        assert_eq!(l.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(l.bucket_url, "http://minio.lan:9000/cache");
        assert_eq!(l.warnings, []);
        assert_eq!(l.key("nix-cache-info"), "team/x86/nix-cache-info");
        assert_eq!(l.to_string(), "s3://cache/team/x86");
    }

    // Nix 2.34 made virtual-hosted addressing the default on AWS.
    #[test]
    fn without_an_endpoint_the_bucket_is_virtual_hosted_at_aws_in_us_east_1() {
        let l = parse("s3://cache");
        assert_eq!(l.region, DEFAULT_REGION);
        assert_eq!(l.bucket_url, "https://cache.s3.us-east-1.amazonaws.com");
        let l = parse("s3://cache?region=eu-west-1");
        assert_eq!(l.bucket_url, "https://cache.s3.eu-west-1.amazonaws.com");
    }

    #[test]
    fn path_style_at_aws_when_asked() {
        let l = parse("s3://cache?region=eu-west-1&addressing-style=path");
        assert_eq!(l.bucket_url, "https://s3.eu-west-1.amazonaws.com/cache");
    }

    #[test]
    fn with_an_endpoint_auto_is_path_style() {
        for style in ["", "&addressing-style=auto", "&addressing-style=path"] {
            let l = parse(&format!("s3://cache?endpoint=https://minio.lan{style}"));
            assert_eq!(l.bucket_url, "https://minio.lan/cache", "{style}");
        }
    }

    #[test]
    fn virtual_hosted_with_an_endpoint_puts_the_bucket_before_its_host() {
        let l = parse("s3://cache?endpoint=http://s3.lan:9000&addressing-style=virtual");
        assert_eq!(l.bucket_url, "http://cache.s3.lan:9000");
    }

    // Nix keeps the path of an endpoint URL, before the bucket or the key;
    // a final `/` adds no empty segment.
    #[test]
    fn an_endpoint_s_path_is_kept() {
        let l = parse("s3://cache?endpoint=https://gw.lan/s3/");
        assert_eq!(l.bucket_url, "https://gw.lan/s3/cache");
        let l = parse("s3://cache?endpoint=https://gw.lan/s3&addressing-style=virtual");
        assert_eq!(l.bucket_url, "https://cache.gw.lan/s3");
    }

    #[test]
    fn a_dotted_bucket_falls_back_to_path_style_under_auto_with_a_warning() {
        let l = parse("s3://cache.example.org");
        assert_eq!(
            l.bucket_url,
            "https://s3.us-east-1.amazonaws.com/cache.example.org"
        );
        assert_eq!(
            l.warnings,
            [Warning::DottedBucket {
                bucket: "cache.example.org".into()
            }]
        );
        // Said explicitly, no warning.
        assert_eq!(parse("s3://a.b?addressing-style=path").warnings, []);
    }

    #[test]
    fn a_dotted_bucket_cannot_be_virtual_hosted() {
        assert!(matches!(
            Location::parse("s3://a.b?addressing-style=virtual"),
            Err(LocationError::VirtualDottedBucket { .. })
        ));
    }

    #[test]
    fn virtual_hosted_needs_a_host_name_not_an_ip_address() {
        for endpoint in ["http://127.0.0.1:9000", "http://[::1]:9000"] {
            let e = Location::parse(&format!(
                "s3://cache?endpoint={endpoint}&addressing-style=virtual"
            ))
            .unwrap_err();
            assert!(matches!(e, LocationError::VirtualIpEndpoint { .. }), "{e}");
        }
    }

    #[test]
    fn a_bare_endpoint_is_https_and_deprecated() {
        let l = parse("s3://cache?endpoint=s3.example.org");
        assert_eq!(l.bucket_url, "https://s3.example.org/cache");
        assert_eq!(
            l.warnings,
            [Warning::BareEndpoint {
                given: "s3.example.org".into(),
                write: "https://s3.example.org".into(),
                with_scheme: false,
            }]
        );
        assert_eq!(
            l.warnings[0].to_string(),
            "endpoint=s3.example.org has no scheme, a form Nix 2.36 deprecates: \
             write endpoint=https://s3.example.org"
        );
    }

    #[test]
    fn a_bare_endpoint_with_scheme_is_one_warning_naming_the_url_to_write() {
        let l = parse("s3://cache?endpoint=minio.lan:9000&scheme=http");
        assert_eq!(l.bucket_url, "http://minio.lan:9000/cache");
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(
            l.warnings[0]
                .to_string()
                .ends_with("write endpoint=http://minio.lan:9000 and drop scheme="),
            "{}",
            l.warnings[0]
        );
    }

    // Nix takes the scheme from an endpoint URL and ignores scheme=.
    #[test]
    fn scheme_with_an_endpoint_url_is_ignored_with_a_warning() {
        let l = parse("s3://cache?endpoint=https://minio.lan&scheme=http");
        assert_eq!(l.bucket_url, "https://minio.lan/cache");
        assert!(matches!(l.warnings[..], [Warning::SchemeIgnored { .. }]));
    }

    #[test]
    fn scheme_without_an_endpoint_says_which_endpoint_means_the_same() {
        let l = parse("s3://cache?region=eu-west-1&scheme=http");
        assert_eq!(l.bucket_url, "http://cache.s3.eu-west-1.amazonaws.com");
        assert_eq!(
            l.warnings[0].to_string(),
            "scheme=http is deprecated since Nix 2.36: write \
             endpoint=http://s3.eu-west-1.amazonaws.com&addressing-style=virtual instead"
        );
        // What it says to write is the same bucket address, without warning.
        let instead = parse(
            "s3://cache?region=eu-west-1&endpoint=http://s3.eu-west-1.amazonaws.com\
             &addressing-style=virtual",
        );
        assert_eq!(instead.bucket_url, l.bucket_url);
        assert_eq!(instead.warnings, []);
    }

    #[test]
    fn settings_of_how_nix_writes_a_cache_are_refused() {
        for name in ["compression", "multipart-upload", "versionId", "nonsense"] {
            let url = format!("s3://b?{name}=x");
            assert_eq!(
                Location::parse(&url),
                Err(LocationError::UnknownParameter {
                    url: url.clone(),
                    name: name.into()
                })
            );
        }
        assert_eq!(
            Location::parse("s3://b?compression=xz")
                .unwrap_err()
                .to_string(),
            "'s3://b?compression=xz': unknown parameter 'compression' (publish takes region, \
             endpoint, addressing-style, profile, storage-class and scheme)"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_parameter() {
        for (url, message) in [
            (
                "s3://b?addressing-style=dns",
                "addressing-style must be auto, path or virtual, not 'dns'",
            ),
            (
                "s3://b?scheme=ftp",
                "scheme must be http or https, not 'ftp'",
            ),
            (
                "s3://b?endpoint=ftp://x",
                "endpoint 'ftp://x' must be an http:// or https:// URL",
            ),
            (
                "s3://b?endpoint=host:9000/path",
                "endpoint 'host:9000/path' is a host[:port] with more after it",
            ),
            (
                "s3://b?storage-class=STANDARD%0D%0AX-Evil:%201",
                "storage-class 'STANDARD\\r\\nX-Evil: 1' is not a storage class name",
            ),
            ("s3://b?region=", "the parameter 'region' is empty"),
            (
                "s3://b?region=a&region=b",
                "the parameter 'region' is given twice",
            ),
        ] {
            let e = Location::parse(url).unwrap_err().to_string();
            assert!(e.starts_with(&format!("'{url}': {message}")), "{e}");
        }
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
