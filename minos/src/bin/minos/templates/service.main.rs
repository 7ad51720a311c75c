// Links the service's handlers (a crate never referenced is not linked, and its routes would be
// missing).
use {{crate}} as _;

fn main() -> minos::Result<()> {
    // config.yml beside Cargo.toml, or the file MINOS_CONFIG names; MINOS_* variables override keys.
    let config = std::env::var("MINOS_CONFIG")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/config.yml").to_owned());
    minos::Launcher::from_config(config)?.run()
}
