//! Where the dstack server is and how to authenticate: the environment
//! (`DSTACK_SERVER_URL`, `DSTACK_TOKEN`, `DSTACK_PROJECT`) or the dstack CLI's own
//! `~/.dstack/config.yml` (`projects: [{name, url, token, default}]`).

use std::path::{Path, PathBuf};

use autodebug_core::{Error, Result, Secret};
use serde::Deserialize;

/// Environment variables read by [`Connection::from_env`].
pub mod env_vars {
    /// Base URL of the dstack server, e.g. `http://127.0.0.1:3000`.
    pub const SERVER_URL: &str = "DSTACK_SERVER_URL";
    /// The user token the dstack CLI would use.
    pub const TOKEN: &str = "DSTACK_TOKEN";
    /// Project name (default: the config file's default project, else `main`).
    pub const PROJECT: &str = "DSTACK_PROJECT";
    /// Overrides the config file path (default `~/.dstack/config.yml`).
    pub const CONFIG: &str = "DSTACK_CONFIG";
}

/// The project `dstack server` creates on first start.
pub const DEFAULT_PROJECT: &str = "main";

/// A dstack server URL, project and token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Server base URL without a trailing slash.
    pub url: String,
    pub project: String,
    /// Never printed: `Debug` shows `***`.
    pub token: Secret,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    projects: Vec<ProjectEntry>,
}

#[derive(Deserialize)]
struct ProjectEntry {
    name: String,
    url: String,
    token: Secret,
    #[serde(default)]
    default: bool,
}

impl Connection {
    pub fn new(url: impl Into<String>, project: impl Into<String>, token: Secret) -> Result<Self> {
        let url = url.into().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::config(
                "dstack server url",
                format!("`{url}` is not an http(s) URL; set {} like http://127.0.0.1:3000", env_vars::SERVER_URL),
            ));
        }
        let project = project.into();
        if project.trim().is_empty() {
            return Err(Error::config("dstack project", format!("empty project name; set {}", env_vars::PROJECT)));
        }
        if token.is_empty() {
            return Err(Error::config("dstack token", format!("empty token; set {}", env_vars::TOKEN)));
        }
        Ok(Connection { url, project, token })
    }

    /// The default config file: `$DSTACK_CONFIG`, else `~/.dstack/config.yml`.
    pub fn default_config_path() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(env_vars::CONFIG).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path));
        }
        std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|home| Path::new(&home).join(".dstack/config.yml"))
    }

    /// The environment first (`DSTACK_SERVER_URL` + `DSTACK_TOKEN`), else the config file.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok(), Self::default_config_path().as_deref())
    }

    /// [`from_env`](Self::from_env) with an explicit variable lookup and config path (for tests
    /// and embedding programs that keep their own settings).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>, config: Option<&Path>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let project = get(env_vars::PROJECT);
        match (get(env_vars::SERVER_URL), get(env_vars::TOKEN)) {
            (Some(url), Some(token)) => {
                Connection::new(url, project.unwrap_or_else(|| DEFAULT_PROJECT.into()), Secret::new(token))
            }
            (url, token) => {
                let Some(path) = config.filter(|p| p.exists()) else {
                    return Err(Error::config(
                        env_vars::SERVER_URL,
                        format!(
                            "no dstack server configured: set {} and {} (and optionally {}), or run `dstack project add` to write {}",
                            env_vars::SERVER_URL,
                            env_vars::TOKEN,
                            env_vars::PROJECT,
                            config.map(|p| p.display().to_string()).unwrap_or_else(|| "~/.dstack/config.yml".into())
                        ),
                    ));
                };
                let mut connection = Self::from_config_file(path, project.as_deref())?;
                if let Some(url) = url {
                    connection.url = url.trim_end_matches('/').to_string();
                }
                if let Some(token) = token {
                    connection.token = Secret::new(token);
                }
                Ok(connection)
            }
        }
    }

    /// Reads the dstack CLI's config file; `project` picks an entry by name, otherwise the
    /// entry marked `default: true` (or the only one).
    pub fn from_config_file(path: &Path, project: Option<&str>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file: ConfigFile = serde_yaml::from_str(&text)
            .map_err(|e| Error::config(path.display().to_string(), format!("not a dstack config file: {e}")))?;
        let location = format!("{}: projects", path.display());
        let entry = match project {
            Some(name) => file.projects.iter().find(|p| p.name == name).ok_or_else(|| {
                let known: Vec<&str> = file.projects.iter().map(|p| p.name.as_str()).collect();
                Error::config(
                    &location,
                    format!("no project `{name}` (known: {}); check {}", known.join(", "), env_vars::PROJECT),
                )
            })?,
            None => file
                .projects
                .iter()
                .find(|p| p.default)
                .or_else(|| if file.projects.len() == 1 { file.projects.first() } else { None })
                .ok_or_else(|| {
                    Error::config(
                        &location,
                        format!("no default project; mark one `default: true` or set {}", env_vars::PROJECT),
                    )
                })?,
        };
        Connection::new(entry.url.clone(), entry.name.clone(), entry.token.clone())
            .map_err(|e| Error::config(&location, e.to_string()))
    }

    /// `{url}/api/project/{project}/{path}`.
    pub fn project_url(&self, path: &str) -> String {
        format!("{}/api/project/{}/{}", self.url, self.project, path.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.yml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn environment_wins_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "projects:\n- {name: main, url: 'http://file:1', token: ft, default: true}\n");
        let vars = |n: &str| match n {
            env_vars::SERVER_URL => Some("http://env:2/".to_string()),
            env_vars::TOKEN => Some("et".to_string()),
            _ => None,
        };
        let c = Connection::from_lookup(vars, Some(&path)).unwrap();
        assert_eq!((c.url.as_str(), c.project.as_str(), c.token.expose()), ("http://env:2", "main", "et"));
        let c = Connection::from_lookup(|_| None, Some(&path)).unwrap();
        assert_eq!((c.url.as_str(), c.token.expose()), ("http://file:1", "ft"));
        assert_eq!(format!("{c:?}").matches("ft").count(), 0, "token leaked in Debug: {c:?}");
    }

    #[test]
    fn config_file_picks_the_named_or_default_project() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "projects:\n- {name: a, url: 'http://a:1', token: ta}\n- {name: b, url: 'http://b:1', token: tb, default: true}\n",
        );
        assert_eq!(Connection::from_config_file(&path, None).unwrap().project, "b");
        assert_eq!(Connection::from_config_file(&path, Some("a")).unwrap().token.expose(), "ta");
        let err = Connection::from_config_file(&path, Some("zz")).unwrap_err().to_string();
        assert!(err.contains("zz") && err.contains("config.yml") && err.contains("a, b"), "{err}");
    }

    #[test]
    fn missing_everything_says_what_to_set() {
        let err =
            Connection::from_lookup(|_| None, Some(Path::new("/nonexistent/config.yml"))).unwrap_err().to_string();
        assert!(err.contains(env_vars::SERVER_URL) && err.contains(env_vars::TOKEN), "{err}");
    }
}
