//! REST path templates (`/foos/{uuid}`) and resolution of a concrete request to the most specific one.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use super::RegistrationError;

/// A REST path template: `/foos/{uuid}/bars`. Segments are literal, or a `{name}` parameter that
/// matches any one non-empty segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    Parameter,
}

impl PathTemplate {
    /// Parses a template, refusing what a `rest = "..."` route would refuse (see
    /// `minos_rules::check_path_template`): it starts with `/`, and each parameter is a whole `{name}`
    /// segment.
    pub fn parse(text: &str) -> Result<Self, RegistrationError> {
        minos_rules::check_path_template(text).map_err(|problem| {
            RegistrationError::InvalidPath {
                path: text.to_owned(),
                reason: format!("{} ({})", problem.message, problem.help),
            }
        })?;
        let segments = text
            .split('/')
            .skip(1)
            .filter(|segment| !segment.is_empty() || text != "/")
            .map(|segment| match segment.starts_with('{') {
                true => Segment::Parameter,
                false => Segment::Literal(segment.to_owned()),
            })
            .collect();
        Ok(PathTemplate {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` (a concrete request path, without query) fits this template.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        parts.len() == self.segments.len()
            && self
                .segments
                .iter()
                .zip(parts)
                .all(|(segment, part)| match segment {
                    Segment::Literal(literal) => literal == part,
                    Segment::Parameter => !part.is_empty(),
                })
    }

    /// Which of two templates matching the same path is more specific: the first segment where they
    /// differ decides, a literal beating a parameter (`/foos/example` before `/foos/{uuid}`).
    pub fn specificity(&self, other: &PathTemplate) -> Ordering {
        for (mine, theirs) in self.segments.iter().zip(&other.segments) {
            match (mine, theirs) {
                (Segment::Literal(_), Segment::Parameter) => return Ordering::Greater,
                (Segment::Parameter, Segment::Literal(_)) => return Ordering::Less,
                _ => {}
            }
        }
        Ordering::Equal
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A set of routes, each a method and a template with a value (the service or instance serving it):
/// resolves a request to the most specific matching route, whatever the order they were added in.
/// Routes are indexed by method, segment count and first segment, so a resolution looks at the few
/// routes that can match rather than at all of them.
#[derive(Clone, Debug)]
pub struct Routes<T> {
    routes: Vec<(String, PathTemplate, T)>,
    index: HashMap<Key, Vec<usize>>,
}

/// Method, number of segments, and the first segment when it is literal (`None`: a parameter, which
/// any first segment may match).
type Key = (String, usize, Option<String>);

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Routes {
            routes: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T> Routes<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `method template → value` (methods compare case-insensitively).
    pub fn add(&mut self, method: &str, template: PathTemplate, value: T) {
        let method = method.to_ascii_uppercase();
        let first = match template.segments.first() {
            Some(Segment::Literal(literal)) => Some(literal.clone()),
            _ => None,
        };
        let key = (method.clone(), template.segments.len(), first);
        self.index.entry(key).or_default().push(self.routes.len());
        self.routes.push((method, template, value));
    }

    /// The values of the most specific routes matching `method path`, in the order they were added
    /// (several when several services registered the same route).
    pub fn resolve(&self, method: &str, path: &str) -> Vec<&T> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let method = method.to_ascii_uppercase();
        let Some(rest) = path.strip_prefix('/') else {
            return Vec::new();
        };
        let count = if rest.is_empty() {
            0
        } else {
            rest.split('/').count()
        };
        let first = rest.split('/').next().filter(|_| count > 0);
        // Templates starting with this literal, and those starting with a parameter.
        let mut keys = vec![(method.clone(), count, None)];
        if let Some(first) = first {
            keys.push((method, count, Some(first.to_owned())));
        }
        let mut candidates: Vec<usize> = keys
            .iter()
            .filter_map(|key| self.index.get(key))
            .flatten()
            .copied()
            .collect();
        candidates.sort_unstable();
        let matching: Vec<&(String, PathTemplate, T)> = candidates
            .into_iter()
            .map(|i| &self.routes[i])
            .filter(|(_, template, _)| template.matches(path))
            .collect();
        let Some(best) = matching
            .iter()
            .map(|(_, template, _)| template)
            .max_by(|a, b| a.specificity(b))
        else {
            return Vec::new();
        };
        matching
            .iter()
            .filter(|(_, template, _)| template.specificity(best) == Ordering::Equal)
            .map(|(_, _, value)| value)
            .collect()
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_refuse_what_is_not_a_template() {
        assert!(PathTemplate::parse("/foos/{uuid}").is_ok());
        assert!(PathTemplate::parse("/").is_ok());
        for bad in [
            "foos",
            "/foos/{uuid",
            "/foos/{}",
            "/foos/x{uuid}",
            "/foos/{a-b}",
        ] {
            let error = PathTemplate::parse(bad).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn templates_match_whole_segments() {
        let template = PathTemplate::parse("/foos/{uuid}").unwrap();
        assert!(template.matches("/foos/123"));
        assert!(!template.matches("/foos"));
        assert!(!template.matches("/foos/"));
        assert!(!template.matches("/foos/1/bars"));
        assert!(!template.matches("/bars/1"));
        assert!(PathTemplate::parse("/").unwrap().matches("/"));
    }

    #[test]
    fn the_most_specific_route_wins_whatever_the_order() {
        for reversed in [false, true] {
            let mut entries = vec![
                ("GET", "/foos/{uuid}", "by-uuid"),
                ("GET", "/foos/example", "example"),
                ("GET", "/{kind}/example", "any-kind"),
            ];
            if reversed {
                entries.reverse();
            }
            let mut routes = Routes::new();
            for (method, path, value) in entries {
                routes.add(method, PathTemplate::parse(path).unwrap(), value);
            }
            assert_eq!(routes.resolve("GET", "/foos/example"), [&"example"]);
            assert_eq!(routes.resolve("get", "/foos/42?x=1"), [&"by-uuid"]);
            assert_eq!(routes.resolve("GET", "/bars/example"), [&"any-kind"]);
            assert!(routes.resolve("POST", "/foos/42").is_empty());
        }
    }

    #[test]
    fn the_index_finds_every_kind_of_template() {
        let mut routes = Routes::new();
        routes.add("GET", PathTemplate::parse("/").unwrap(), "root");
        routes.add("GET", PathTemplate::parse("/{any}").unwrap(), "one");
        for service in 0..100 {
            let path = format!("/s{service}/{{uuid}}");
            routes.add("GET", PathTemplate::parse(&path).unwrap(), "many");
        }
        assert_eq!(routes.len(), 102);
        assert_eq!(routes.resolve("GET", "/"), [&"root"]);
        assert_eq!(routes.resolve("GET", "/x"), [&"one"]);
        assert_eq!(routes.resolve("GET", "/s42/7"), [&"many"]);
        assert!(routes.resolve("GET", "/s42/7/8").is_empty());
        assert!(routes.resolve("GET", "no-slash").is_empty());
    }

    #[test]
    fn equally_specific_routes_all_resolve() {
        let mut routes = Routes::new();
        routes.add("GET", PathTemplate::parse("/foos/{uuid}").unwrap(), 1);
        routes.add("GET", PathTemplate::parse("/foos/{id}").unwrap(), 2);
        assert_eq!(routes.resolve("GET", "/foos/7"), [&1, &2]);
    }
}
