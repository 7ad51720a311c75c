//! Rules of Minos for Rust that its attribute macros check at compile time and its runtime applies,
//! kept in one place so the two never disagree. Users depend on the `minos` facade, not on this crate.

use std::borrow::Cow;
use std::str::FromStr;

/// Keys of a stored root that minos manages and a caller never supplies: its identity, version and
/// timestamps. A `#[root_entity]` field cannot be named like them.
pub const RESERVED_FIELDS: [&str; 4] = ["uuid", "version", "created_at", "updated_at"];

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
    fn crontab_expressions_get_a_seconds_field() {
        assert_eq!(cron_expression("*/5 * * * *"), "0 */5 * * * *");
        assert_eq!(cron_expression("0 */5 * * * *"), "0 */5 * * * *");
        assert!(cron_schedule("*/5 * * * *").is_ok());
        assert!(cron_schedule("every five minutes").is_err());
    }
}
