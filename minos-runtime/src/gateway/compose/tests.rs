//! Planning composed routes: parameters, dependencies, cycles, filling calls from answers.

use super::*;
use crate::gateway::config::{PartConfig, PartSpec};

fn config(route: &str, parts: &[(&str, &str, bool)]) -> GatewayConfig {
    GatewayConfig {
        compose: vec![ComposeConfig {
            route: route.into(),
            timeout_ms: None,
            parts: parts
                .iter()
                .map(|(name, call, optional)| {
                    let part = match optional {
                        false => PartConfig::Call(call.to_string()),
                        true => PartConfig::Detailed(PartSpec {
                            call: call.to_string(),
                            optional: true,
                        }),
                    };
                    (name.to_string(), part)
                })
                .collect(),
        }],
        ..GatewayConfig::default()
    }
}

fn names(index: &Index<ComposePlan>) -> Vec<Vec<(String, Vec<usize>)>> {
    index
        .values()
        .map(|plan| {
            plan.parts
                .iter()
                .map(|p| (p.name.clone(), p.needs.clone()))
                .collect()
        })
        .collect()
}

#[test]
fn parts_are_ordered_after_the_parts_they_use() {
    let index = plans(&config(
        "GET /foos/{uuid}/full",
        &[
            ("a_foobar", "GET /foobars/{foo.foobar}", true),
            ("foo", "GET /foos/{uuid}", false),
            ("deep", "GET /x/{a_foobar.inner.id}/{foo.uuid}?q=1", false),
            ("alone", "GET /alone", false),
        ],
    ))
    .unwrap();
    assert_eq!(
        names(&index),
        [[
            ("foo".to_owned(), vec![]),
            ("a_foobar".to_owned(), vec![0]),
            ("alone".to_owned(), vec![]),
            ("deep".to_owned(), vec![0, 1]),
        ]]
    );
    let (template, plan) = index.resolve(&Method::GET, "/foos/7/full").unwrap();
    assert_eq!(template.captures("/foos/7/full"), ["7"]);
    assert_eq!(plan.timeout, Duration::from_millis(30_000));
    assert!(plan.parts[1].optional && !plan.parts[0].optional);
    assert_eq!(
        plan.parts[3].pieces[1],
        Piece::Field {
            part: "a_foobar".into(),
            position: 1,
            path: vec!["inner".into(), "id".into()]
        }
    );
}

#[test]
fn cycles_and_unknown_names_are_refused_at_start() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str, bool)], &'a str);
    let cases: [Case; 8] = [
        (
            "GET /foos/{uuid}/full",
            &[
                ("a", "GET /a/{b.id}", false),
                ("b", "GET /b/{c.id}", false),
                ("c", "GET /c/{a.id}", false),
            ],
            "`a` → `b` → `c` → `a`",
        ),
        (
            "GET /foos/{uuid}/full",
            &[("a", "GET /a/{a.id}", false)],
            "its own answer",
        ),
        (
            "GET /foos/{uuid}/full",
            &[("a", "GET /a/{nope.id}", false)],
            "there is no part `nope` (parts: a)",
        ),
        (
            "GET /foos/{uuid}/full",
            &[("a", "GET /a/{id}", false)],
            "`{id}` is neither a parameter of the composed route ({uuid})",
        ),
        (
            "GET /foos/{uuid}/full",
            &[("a", "FETCH /a", false)],
            "not an HTTP method",
        ),
        (
            "GET /foos/{uuid}/full",
            &[("a", "GET /a/{uuid", false)],
            "not closed",
        ),
        ("GET foos", &[("a", "GET /a", false)], "GET foos"),
        ("GET /foos", &[("_a", "GET /a", false)], "part `_a`"),
    ];
    for (route, parts, expected) in cases {
        let error = plans(&config(route, parts)).unwrap_err();
        assert!(error.contains(expected), "{error}");
        assert!(error.starts_with("gateway.compose[0]"), "{error}");
    }
    let mut twice = config("GET /x", &[("a", "GET /a", false)]);
    twice.compose.push(twice.compose[0].clone());
    assert!(plans(&twice).unwrap_err().contains("composed twice"));
}

#[test]
fn paths_are_filled_from_parameters_and_answers() {
    let index = plans(&config(
        "GET /foos/{uuid}/full",
        &[
            ("foo", "GET /foos/{uuid}", false),
            ("bar", "GET /bars/{foo.bar}/{foo.n}", false),
        ],
    ))
    .unwrap();
    let plan = index.values().next().unwrap();
    assert_eq!(fill(&plan.parts[0], &["7"], &[]).unwrap(), "/foos/7");
    let answer: Outcome = Arc::new(Ok(serde_json::json!({"bar": "a b/c", "n": 3})));
    assert_eq!(
        fill(&plan.parts[1], &["7"], &[(0, answer)]).unwrap(),
        "/bars/a%20b%2Fc/3"
    );
    let missing: Outcome = Arc::new(Ok(serde_json::json!({"bar": null})));
    let error = fill(&plan.parts[1], &["7"], &[(0, missing)]).unwrap_err();
    assert_eq!(
        (error.status, error.message.as_str()),
        (404, "`foo` has no `bar`")
    );
    let failed: Outcome = Arc::new(Err(PartError::new(404, "gone")));
    let error = fill(&plan.parts[1], &["7"], &[(0, failed)]).unwrap_err();
    assert_eq!(error.status, 404);
    assert!(error.message.contains("needs `foo`, which failed: gone"));
}
