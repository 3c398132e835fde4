//! Credentials and region, found as the AWS tools find them.
//!
//! In this order: the profile the URL names (`?profile=`) from the shared
//! files; else `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (with
//! `AWS_SESSION_TOKEN`) from the environment; else the profile
//! `AWS_PROFILE` names, or `default`, from the shared files:
//! `AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`, sections `[NAME]`),
//! then `AWS_CONFIG_FILE` (`~/.aws/config`, sections `[profile NAME]` and
//! `[default]`). With none of these, the client library's own chain is
//! asked (web identity, container and instance credentials), as an AWS SDK
//! would. A profile named in the URL or `AWS_PROFILE` that neither file has
//! is an error, not a silent fall-back.
//!
//! The region is the URL's alone (`location.rs`), as for Nix: not
//! `AWS_REGION` nor a profile's `region`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Static credentials, and where they were found (for error messages).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials({} from {})",
            self.access_key_id, self.source
        )
    }
}

#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("the AWS profile '{profile}' is in neither {} nor {}", .credentials.display(), .config.display())]
    NoSuchProfile {
        profile: String,
        credentials: PathBuf,
        config: PathBuf,
    },
    #[error("the AWS profile '{profile}' in {} has aws_access_key_id without aws_secret_access_key, or the reverse", .file.display())]
    HalfAKey { profile: String, file: PathBuf },
    #[error("reading {}: {source}", .file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// The environment [`resolve`] reads: variables and the home directory.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process's own environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// Finds the credentials for a URL's `profile`; None leaves them to the
/// client library's chain.
pub fn resolve(
    url_profile: Option<&str>,
    env: &dyn Environment,
) -> Result<Option<Credentials>, CredentialsError> {
    let home = env.var("HOME").unwrap_or_default();
    let credentials_file = env
        .var("AWS_SHARED_CREDENTIALS_FILE")
        .map_or_else(|| Path::new(&home).join(".aws/credentials"), PathBuf::from);
    let config_file = env
        .var("AWS_CONFIG_FILE")
        .map_or_else(|| Path::new(&home).join(".aws/config"), PathBuf::from);
    let named = url_profile
        .map(str::to_string)
        .or_else(|| env.var("AWS_PROFILE"));
    let profile = named.clone().unwrap_or_else(|| "default".to_string());

    let shared = read_ini(&credentials_file)?;
    let config = read_ini(&config_file)?;
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let from_credentials = shared.get(&profile);
    let from_config = config.get(&config_section);
    if named.is_some() && from_credentials.is_none() && from_config.is_none() {
        return Err(CredentialsError::NoSuchProfile {
            profile,
            credentials: credentials_file,
            config: config_file,
        });
    }

    let from_env = match (
        env.var("AWS_ACCESS_KEY_ID"),
        env.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) if url_profile.is_none() => Some(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env.var("AWS_SESSION_TOKEN"),
            source: "the environment (AWS_ACCESS_KEY_ID)".to_string(),
        }),
        _ => None,
    };
    match from_env {
        Some(c) => Ok(Some(c)),
        None => match key_in(from_credentials, &profile, &credentials_file)? {
            Some(c) => Ok(Some(c)),
            None => key_in(from_config, &profile, &config_file),
        },
    }
}

type Section = BTreeMap<String, String>;

fn key_in(
    section: Option<&Section>,
    profile: &str,
    file: &Path,
) -> Result<Option<Credentials>, CredentialsError> {
    let Some(section) = section else {
        return Ok(None);
    };
    match (
        section.get("aws_access_key_id"),
        section.get("aws_secret_access_key"),
    ) {
        (Some(id), Some(secret)) => Ok(Some(Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: section.get("aws_session_token").cloned(),
            source: format!("the profile '{profile}' in {}", file.display()),
        })),
        (None, None) => Ok(None),
        _ => Err(CredentialsError::HalfAKey {
            profile: profile.to_string(),
            file: file.to_path_buf(),
        }),
    }
}

/// The sections of an AWS shared file; a missing file has none. Indented
/// lines (the settings nested under `s3 =`) are skipped.
fn read_ini(file: &Path) -> Result<BTreeMap<String, Section>, CredentialsError> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(CredentialsError::Read {
                file: file.to_path_buf(),
                source,
            });
        }
    };
    Ok(parse_ini(&text))
}

fn parse_ini(text: &str) -> BTreeMap<String, Section> {
    let mut sections = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_insert_with(Section::new);
            current = Some(name);
        } else if let (Some(section), Some((key, value))) = (&current, line.split_once('=')) {
            sections
                .get_mut(section)
                .expect("entered above")
                .insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vars(BTreeMap<&'static str, String>);

    impl Environment for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    /// A home directory with the two shared files, and variables.
    fn setup(
        credentials: &str,
        config: &str,
        vars: &[(&'static str, &str)],
    ) -> (tempfile::TempDir, Vars) {
        let home = tempfile::tempdir().unwrap();
        fs::create_dir(home.path().join(".aws")).unwrap();
        fs::write(home.path().join(".aws/credentials"), credentials).unwrap();
        fs::write(home.path().join(".aws/config"), config).unwrap();
        let mut map: BTreeMap<&'static str, String> =
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        map.insert("HOME", home.path().to_str().unwrap().to_string());
        (home, Vars(map))
    }

    const CREDENTIALS: &str = "\
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secret-default

[ci]
aws_access_key_id=AKIDCI
aws_secret_access_key=secret-ci
aws_session_token=token-ci
";
    const CONFIG: &str = "\
[default]
region = eu-central-1
[profile ci]
region = ap-south-1
s3 =
  max_concurrent_requests = 20
";

    #[test]
    fn the_default_profile_of_the_shared_files() {
        let (_home, env) = setup(CREDENTIALS, CONFIG, &[]);
        let c = resolve(None, &env).unwrap().unwrap();
        assert_eq!(c.access_key_id, "AKIDDEFAULT");
        assert_eq!(c.secret_access_key, "secret-default");
    }

    #[test]
    fn the_url_s_profile_wins_over_the_environment() {
        let (_home, env) = setup(
            CREDENTIALS,
            CONFIG,
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
            ],
        );
        let c = resolve(Some("ci"), &env).unwrap().unwrap();
        assert_eq!(c.access_key_id, "AKIDCI");
        assert_eq!(c.session_token.as_deref(), Some("token-ci"));
    }

    #[test]
    fn environment_keys_win_over_aws_profile() {
        let (_home, env) = setup(
            CREDENTIALS,
            CONFIG,
            &[
                ("AWS_PROFILE", "ci"),
                ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
            ],
        );
        assert_eq!(
            resolve(None, &env).unwrap().unwrap().access_key_id,
            "AKIDENV"
        );
    }

    #[test]
    fn aws_profile_names_the_profile_of_the_shared_files() {
        let (_home, env) = setup(CREDENTIALS, CONFIG, &[("AWS_PROFILE", "ci")]);
        assert_eq!(
            resolve(None, &env).unwrap().unwrap().access_key_id,
            "AKIDCI"
        );
    }

    #[test]
    fn nothing_anywhere_leaves_it_to_the_library() {
        let (_home, env) = setup("", "", &[]);
        assert_eq!(resolve(None, &env).unwrap(), None);
    }

    #[test]
    fn a_named_profile_that_does_not_exist_is_an_error() {
        let (_home, env) = setup(CREDENTIALS, CONFIG, &[]);
        let e = resolve(Some("nope"), &env).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the AWS profile 'nope' is in neither "),
            "{e}"
        );
    }

    #[test]
    fn half_a_key_is_an_error() {
        let (_home, env) = setup("[default]\naws_access_key_id = X\n", "", &[]);
        assert!(matches!(
            resolve(None, &env),
            Err(CredentialsError::HalfAKey { .. })
        ));
    }
}
