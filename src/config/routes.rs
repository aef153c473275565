//! `[[routes]]`: the one table array of the configuration, file only. Each
//! entry is checked on its own (`routes[1].name`), then against the others
//! (no duplicate name or prefix).

use std::collections::HashMap;

use config::{Value, ValueKind};

use super::value::{Field, describe};
use super::{ConfigError, err, suggest};

/// One `[[routes]]` entry: sessions whose path starts with `path_prefix`
/// carry `route="<name>"` on their metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Label value, `[A-Za-z0-9_-]+`, not `default` or `other`.
    pub name: String,
    /// Starts with `/`.
    pub path_prefix: String,
}

/// The routes of the file, each refused entry reported in `errors` and left out.
pub(super) fn routes(value: Value, errors: &mut Vec<ConfigError>) -> Vec<Route> {
    let items = match value.kind {
        ValueKind::Array(items) => items,
        other => {
            let found = describe(&other);
            errors.push(err(
                "routes",
                format!("expected an array of tables ([[routes]]), found {found}"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut prefixes: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut table = match item.kind {
            ValueKind::Table(t) => t,
            other => {
                errors.push(err(
                    format!("routes[{i}]"),
                    format!("expected a table, found {}", describe(&other)),
                ));
                continue;
            }
        };
        let mut field = |name: &str, check: fn(&str) -> Result<(), String>| {
            let key = format!("routes[{i}].{name}");
            let text = match table.remove(name) {
                None => Err("missing: every route needs a name and a path_prefix".into()),
                Some(v) => Field {
                    value: &v,
                    from_env: false,
                }
                .string(),
            };
            match text.and_then(|t| check(&t).map(|()| t)) {
                Ok(t) => Some(t),
                Err(reason) => {
                    errors.push(err(key, reason));
                    None
                }
            }
        };
        let name = field("name", route_name);
        let prefix = field("path_prefix", path_prefix);
        let mut unknown: Vec<_> = table.into_keys().collect();
        unknown.sort();
        for k in unknown {
            let hint = suggest(&k, ["name", "path_prefix"]);
            errors.push(err(
                format!("routes[{i}].{k}"),
                format!("unknown key{hint}"),
            ));
        }
        let (Some(name), Some(path_prefix)) = (name, prefix) else {
            continue;
        };
        let mut dup = |seen: &mut HashMap<String, usize>, field: &str, v: &str| match seen.get(v) {
            Some(j) => {
                let reason = format!("duplicate {v:?} (also routes[{j}].{field})");
                errors.push(err(format!("routes[{i}].{field}"), reason));
                true
            }
            None => {
                seen.insert(v.to_owned(), i);
                false
            }
        };
        let dup_name = dup(&mut names, "name", &name);
        let dup_prefix = dup(&mut prefixes, "path_prefix", &path_prefix);
        if !dup_name && !dup_prefix {
            out.push(Route { name, path_prefix });
        }
    }
    out
}

fn route_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("must not be empty".into())
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Err(format!(
            "{name:?} must match [A-Za-z0-9_-]+ (it is a metric label value)"
        ))
    } else if name == "default" || name == "other" {
        Err(format!("{name:?} is reserved for the route label"))
    } else {
        Ok(())
    }
}

fn path_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        Err(format!("{prefix:?} must start with '/'"))
    } else if prefix.contains(['?', '#']) || !prefix.chars().all(|c| c.is_ascii_graphic()) {
        Err(format!("{prefix:?} must be a plain URL path"))
    } else {
        Ok(())
    }
}
