//! Layering: built-in defaults → `$CONFIG_DIR/default.toml` → `$CONFIG_DIR/$APP_ENV.toml` →
//! environment (`X`, or `X_FILE` holding the value). Files use the variable names in lower case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::vars::{self, VARS};
use super::Problem;

/// Where an effective value came from, shown by `check-config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env,
    EnvFile(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env => f.write_str("env"),
            Source::EnvFile(p) => write!(f, "env file {}", p.display()),
        }
    }
}

/// Every known variable with its effective string value, before typing.
#[derive(Debug, Default)]
pub struct Raw {
    pub values: BTreeMap<&'static str, (String, Source)>,
}

impl Raw {
    pub fn get(&self, name: &str) -> &str {
        self.values.get(name).map(|(v, _)| v.as_str()).unwrap_or("")
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|(_, s)| *s != Source::Default)
    }
}

/// Reads the layers. `env` is injectable so validation can be tested without touching the
/// process environment.
pub fn load(env: &dyn Fn(&str) -> Option<String>) -> (Raw, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut raw = Raw::default();
    for var in VARS {
        raw.values.insert(var.name, (var.default.to_string(), Source::Default));
    }

    let non_empty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let config_dir = PathBuf::from(non_empty("CONFIG_DIR").unwrap_or_else(|| "config".into()));
    let default_file = config_dir.join("default.toml");
    layer_file(&mut raw, &default_file, &mut problems);
    let app_env = non_empty("APP_ENV").unwrap_or_else(|| raw.get("APP_ENV").to_string());
    // Only a known environment name may select a file: APP_ENV=../../etc is refused later.
    if ["development", "test", "production"].contains(&app_env.as_str()) {
        layer_file(&mut raw, &config_dir.join(format!("{app_env}.toml")), &mut problems);
    }

    for var in VARS {
        let direct = non_empty(var.name);
        let file_var = format!("{}_FILE", var.name);
        let via_file = non_empty(&file_var);
        match (direct, via_file) {
            (Some(v), Some(_)) => {
                problems.push(Problem::new(
                    var.name,
                    format!("both {} and {file_var} are set", var.name),
                    format!("set only one of {} or {file_var}", var.name),
                ));
                raw.values.insert(var.name, (v, Source::Env));
            }
            (Some(v), None) => {
                raw.values.insert(var.name, (v, Source::Env));
            }
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(content) => {
                    raw.values.insert(var.name, (content.trim().to_string(), Source::EnvFile(path.into())));
                }
                Err(e) => problems.push(Problem::new(
                    &file_var,
                    format!("cannot read `{path}`: {e}"),
                    "point it at a readable file (a mounted Docker/Kubernetes secret)",
                )),
            },
            (None, None) => {}
        }
    }
    (raw, problems)
}

fn layer_file(raw: &mut Raw, path: &Path, problems: &mut Vec<Problem>) {
    if !path.exists() {
        return;
    }
    let built = config::Config::builder().add_source(config::File::from(path).format(config::FileFormat::Toml)).build();
    let table = match built.and_then(|c| c.try_deserialize::<BTreeMap<String, config::Value>>()) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::new(
                &path.display().to_string(),
                format!("cannot parse: {e}"),
                "fix the TOML syntax (keys are variable names in lower case)",
            ));
            return;
        }
    };
    for (key, value) in table {
        let name = key.to_ascii_uppercase();
        match vars::find(&name) {
            Some(var) => match value.into_string() {
                Ok(v) if !v.trim().is_empty() => {
                    raw.values.insert(var.name, (v, Source::File(path.to_path_buf())));
                }
                Ok(_) => {}
                Err(e) => problems.push(Problem::new(
                    var.name,
                    format!("in {}: {e}", path.display()),
                    "use a string, number or boolean",
                )),
            },
            None => problems.push(Problem::new(
                &name,
                format!("unknown setting `{key}` in {}", path.display()),
                "remove it or fix the typo (see .env.example for every setting)",
            )),
        }
    }
}
