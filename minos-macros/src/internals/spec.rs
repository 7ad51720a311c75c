//! Route specifications inside string literals: `rest = "POST /foos/{uuid}"`, `periodic = "0 */5 * * * *"`.
//! Errors show the literal with a caret under the offending part.

use minos_rules::HTTP_METHODS as METHODS;

/// A parsed REST route.
pub(crate) struct RestSpec {
    pub(crate) method: String,
    pub(crate) path: String,
}

/// An error at byte `offset` of the literal's text.
pub(crate) struct SpecError {
    /// Where to put the caret; `None` when the whole text is wrong.
    pub(crate) offset: Option<usize>,
    pub(crate) message: String,
    pub(crate) help: String,
}

impl SpecError {
    /// The message with the literal quoted and a caret under the problem.
    pub(crate) fn render(&self, text: &str) -> String {
        match self.offset {
            Some(offset) => {
                let caret_at = text[..offset.min(text.len())].chars().count() + 1;
                format!(
                    "{}\n  \"{text}\"\n  {}^\nhelp: {}",
                    self.message,
                    " ".repeat(caret_at),
                    self.help
                )
            }
            None => format!("{}\nhelp: {}", self.message, self.help),
        }
    }
}

fn err(offset: usize, message: impl Into<String>, help: impl Into<String>) -> SpecError {
    SpecError {
        offset: Some(offset),
        message: message.into(),
        help: help.into(),
    }
}

pub(crate) fn parse_rest(text: &str) -> Result<RestSpec, SpecError> {
    let example = "write `rest = \"GET /foos/{uuid}\"`";
    let trimmed = text.trim_start();
    let start = text.len() - trimmed.len();
    let Some(space) = trimmed.find(char::is_whitespace) else {
        return Err(err(start, "a rest route is `METHOD /path`", example));
    };
    let method = &trimmed[..space];
    if !METHODS.contains(&method) {
        let upper = method.to_ascii_uppercase();
        let help = if METHODS.contains(&upper.as_str()) {
            format!("write the method in upper case: `{upper}`")
        } else {
            format!("use one of {}", METHODS.join(", "))
        };
        return Err(err(start, format!("unknown HTTP method `{method}`"), help));
    }
    let after_method = &trimmed[space..];
    let path_start = start + space + (after_method.len() - after_method.trim_start().len());
    let path = text[path_start..].trim_end();
    if let Err(problem) = minos_rules::check_path_template(path) {
        return Err(err(
            path_start + problem.offset,
            problem.message,
            problem.help,
        ));
    }
    Ok(RestSpec {
        method: method.to_owned(),
        path: path.to_owned(),
    })
}

/// Checks a cron expression the way the runtime reads it (5 fields like crontab, or 6–7 with seconds).
pub(crate) fn check_periodic(text: &str) -> Result<(), SpecError> {
    if text == minos_rules::REBOOT {
        return Ok(());
    }
    let normalized = minos_rules::cron_expression(text);
    minos_rules::cron_schedule(text).map(|_| ()).map_err(|e| {
        // The parser's message repeats the expression with its own caret; keep only its explanation.
        let text = e.to_string();
        let reason = text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("unreadable").to_owned();
        SpecError {
            offset: None,
            message: format!("invalid cron expression `{normalized}`: {reason}"),
            help: "write 5 fields (`*/5 * * * *`: every 5 minutes), 6 with seconds first (`0 */5 * * * *`), or `@reboot`".into(),
        }
    })
}

/// Checks a broker topic.
pub(crate) fn check_topic(text: &str) -> Result<(), SpecError> {
    if text.is_empty() {
        return Err(err(
            0,
            "a topic cannot be empty",
            "write the topic, e.g. `broker = \"CreateFoo\"`",
        ));
    }
    if let Some(position) = text.find(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(err(
            position,
            "a topic cannot contain spaces",
            "write one word, e.g. `CreateFoo`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_specs() {
        let spec = parse_rest("POST /foos/{uuid}/bars").ok().unwrap();
        assert_eq!(
            (spec.method.as_str(), spec.path.as_str()),
            ("POST", "/foos/{uuid}/bars")
        );
        let e = parse_rest("POST /foos/{id").err().unwrap();
        assert_eq!(e.offset, Some(11));
        assert!(e.render("POST /foos/{id").contains("unclosed"));
        assert!(parse_rest("FETCH /foos").is_err());
        assert!(parse_rest("post /foos")
            .err()
            .unwrap()
            .help
            .contains("POST"));
        assert!(parse_rest("GET foos").is_err());
        assert!(parse_rest("GET /a/{x}/{x}").is_err());
        assert!(parse_rest("GET /a/b{x}").is_err());
        assert!(parse_rest("GET").is_err());
    }

    #[test]
    fn periodic_specs() {
        assert!(check_periodic("@reboot").is_ok());
        assert!(check_periodic("*/5 * * * *").is_ok());
        assert!(check_periodic("0 */5 * * * *").is_ok());
        assert!(check_periodic("every day").is_err());
    }
}
