//! Loading the configuration in layers: defaults < YAML file < environment (`SONDE_` over
//! `BEYLA_` over Beyla's bare legacy names), each bad value reported with the name the user
//! wrote it under.

use std::path::{Path, PathBuf};

use super::keys::{FileConfig, Key, BARE_ALIASES, KEYS};
use super::{otlp, Config, ConfigError};

impl Config {
    /// Reads `SONDE_CONFIG` / the given file and the process environment.
    pub fn from_env_and_file(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env_file = std::env::var_os("SONDE_CONFIG").map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(env_file);
        Config::load(file.as_deref(), &|k| std::env::var(k).ok())
    }

    /// Defaults < YAML file < environment (`SONDE_` over `BEYLA_` over bare legacy names).
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut c = Config {
            config_file: file.map(Path::to_path_buf),
            ..Config::default()
        };
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                file: shown.clone(),
                reason: e.to_string(),
            })?;
            c.apply_yaml(&text, &shown)?;
        }
        for key in KEYS {
            let upper = key.name.to_uppercase();
            let mut names = vec![format!("SONDE_{upper}"), format!("BEYLA_{upper}")];
            if BARE_ALIASES.contains(&key.name) {
                names.push(upper.clone());
            }
            if let Some((name, value)) = names.iter().find_map(|n| env(n).map(|v| (n, v))) {
                c.set(key, name, &value)?;
            }
        }
        c.otlp = otlp::OtlpConfig::from_env(env).map_err(|e| ConfigError::Invalid {
            key: e.key,
            value: e.value,
            expected: e.expected,
        })?;
        Ok(c)
    }

    /// Applies a YAML configuration document (the text of `--config`); `shown` names it in
    /// errors. Public so the fuzz target can feed it arbitrary text.
    pub fn apply_yaml(&mut self, text: &str, shown: &str) -> Result<(), ConfigError> {
        let file: Option<FileConfig> =
            serde_saphyr::from_str(text).map_err(|e| match unknown_field(&e) {
                Some(key) => ConfigError::UnknownKey {
                    key,
                    file: shown.to_string(),
                },
                None => ConfigError::File {
                    file: shown.to_string(),
                    reason: e.to_string(),
                },
            })?;
        for (name, value) in file.unwrap_or_default().entries() {
            let key = KEYS
                .iter()
                .find(|k| k.name == name)
                .expect("FileConfig comes from KEYS");
            let text = match value {
                // Rules are structured: handed on as JSON text (YAML's flow form), parsed
                // like the environment's.
                v if name == "docker_rules" => v.to_string(),
                serde_json::Value::Array(items) => {
                    items.iter().map(scalar_text).collect::<Vec<_>>().join(",")
                }
                v => scalar_text(&v),
            };
            self.set(key, &format!("{name} (in {shown})"), &text)?;
        }
        Ok(())
    }

    fn set(&mut self, key: &Key, shown: &str, value: &str) -> Result<(), ConfigError> {
        (key.set)(self, value.trim()).map_err(|expected| ConfigError::Invalid {
            key: shown.to_string(),
            value: value.to_string(),
            expected,
        })
    }
}

/// The key a `deny_unknown_fields` error names, through the parser's wrappers.
fn unknown_field(mut e: &serde_saphyr::Error) -> Option<String> {
    loop {
        match e {
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => e = error,
            serde_saphyr::Error::SerdeUnknownField { field, .. } => return Some(field.clone()),
            _ => return None,
        }
    }
}

fn scalar_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}
