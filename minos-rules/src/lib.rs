//! Rules of Minos for Rust that its attribute macros check at compile time and its runtime applies,
//! kept in one place so the two never disagree. Users depend on the `minos` facade, not on this crate.

use std::borrow::Cow;
use std::str::FromStr;

/// Keys of a stored root that minos manages and a caller never supplies: its identity, version and
/// timestamps. A `#[root_entity]` field cannot be named like them.
pub const RESERVED_FIELDS: [&str; 4] = ["uuid", "version", "created_at", "updated_at"];

/// The HTTP methods a REST route (and a registry endpoint) may use, upper case.
pub const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Why a REST path template is refused: where (a byte offset into the path), what, and what to write
/// instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathError {
    /// Byte offset into the path of the problem.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: &'static str,
}

/// Checks a REST path template (`/foos/{uuid}/bars`): it starts with `/`, has no spaces, and each
/// parameter is a whole segment `{name}` (a letter or `_` first, then letters, digits and `_`), each
/// name once.
pub fn check_path_template(path: &str) -> Result<(), PathError> {
    let error = |offset: usize, message: String, help: &'static str| PathError {
        offset,
        message,
        help,
    };
    if !path.starts_with('/') {
        return Err(error(
            0,
            "the path must start with `/`".into(),
            "write `rest = \"GET /foos/{uuid}\"`",
        ));
    }
    let mut names: Vec<&str> = Vec::new();
    let mut offset = 0;
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            offset += 1;
        }
        if let Some(position) = segment.find(char::is_whitespace) {
            return Err(error(
                offset + position,
                "a path cannot contain spaces".into(),
                "encode it or remove it",
            ));
        }
        if segment.contains('{') || segment.contains('}') {
            if !segment.starts_with('{') {
                return Err(error(
                    offset + segment.find('{').unwrap_or(0),
                    "a parameter must be a whole path segment".into(),
                    "write `/{name}` between slashes",
                ));
            }
            if !segment.ends_with('}') || segment.len() < 2 {
                return Err(error(
                    offset,
                    "unclosed `{` in the path".into(),
                    "close the parameter: `{uuid}`",
                ));
            }
            let name = &segment[1..segment.len() - 1];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(error(
                    offset + 1,
                    format!("`{name}` is not a parameter name"),
                    "use letters, digits and `_`: `{uuid}`",
                ));
            }
            if names.contains(&name) {
                return Err(error(
                    offset + 1,
                    format!("the parameter `{name}` appears twice"),
                    "give each parameter its own name",
                ));
            }
            names.push(name);
        }
        offset += segment.len();
    }
    Ok(())
}

/// The periodic route that runs once when the service starts instead of on a schedule.
pub const REBOOT: &str = "@reboot";

/// A cron expression as the scheduler reads it: 5 fields are crontab's (minute precision) and get a
/// `0` seconds field in front; 6–7 fields start with seconds and are kept.
pub fn cron_expression(text: &str) -> Cow<'_, str> {
    match text.split_whitespace().count() {
        5 => Cow::Owned(format!("0 {text}")),
        _ => Cow::Borrowed(text),
    }
}

/// Parses a cron expression (see [`cron_expression`]); the error is the parser's explanation.
pub fn cron_schedule(text: &str) -> Result<cron::Schedule, cron::error::Error> {
    cron::Schedule::from_str(&cron_expression(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates_are_checked_with_the_place_of_each_problem() {
        assert!(check_path_template("/foos/{uuid}/bars").is_ok());
        assert!(check_path_template("/").is_ok());
        let offset = |path: &str| check_path_template(path).unwrap_err().offset;
        assert_eq!(offset("foos"), 0);
        assert_eq!(offset("/foos/{uuid"), 6);
        assert_eq!(offset("/foos/x{uuid}"), 7);
        assert_eq!(offset("/a b"), 2);
        assert_eq!(offset("/{a-b}"), 2);
        assert_eq!(offset("/{id}/x/{id}"), 9);
        assert!(check_path_template("/foos/{}").is_err());
    }

    #[test]
    fn crontab_expressions_get_a_seconds_field() {
        assert_eq!(cron_expression("*/5 * * * *"), "0 */5 * * * *");
        assert_eq!(cron_expression("0 */5 * * * *"), "0 */5 * * * *");
        assert!(cron_schedule("*/5 * * * *").is_ok());
        assert!(cron_schedule("every five minutes").is_err());
    }
}
