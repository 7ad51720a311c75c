//! Handlers in another crate are found once that crate is linked.

// Without this line the crate is not linked and its routes are silently absent.
use minos_example_handlers as _;

#[test]
fn routes_of_a_linked_crate_are_collected() {
    let table = minos::routing::RouteTable::collect().expect("a route table");
    let description = table.describe();
    assert!(
        description.contains("rest GET /shared/ping"),
        "{description}"
    );
    assert!(description.contains("SharedQueries::ping"), "{description}");
}
