//! The quickstart: a `Foo` root entity stored in the embedded store, created, changed, queried and deleted,
//! with the domain messages its events leave in the outbox.

use minos::prelude::*;

#[root_entity]
pub struct Foo {
    pub bar: String,
    pub tags: ValueObjectSet<Tag>,
}

#[value_object]
pub struct Tag {
    pub label: String,
}

#[tokio::main]
async fn main() -> minos::Result<()> {
    let path =
        std::env::var("MINOS_QUICKSTART_DB").unwrap_or_else(|_| ".minos/quickstart.db".into());
    let repository = Repository::sqlite(&path)?;
    println!("embedded store: {path}");
    repository.clone().scope(run()).await?;

    println!("\noutbox (the domain messages committed with the events):");
    for record in repository.store().pending(100).await? {
        println!("  #{:<3} {}", record.id, record.message.topic);
    }
    Ok(())
}

async fn run() -> minos::Result<()> {
    let mut foo = Foo::create(Foo {
        bar: "hello".into(),
        tags: ValueObjectSet::new(),
    })
    .await?;
    println!("created Foo {} (version {})", foo.uuid(), foo.version());

    foo.bar = "hello, world".into();
    foo.tags.insert(Tag {
        label: "greeting".into(),
    });
    foo.save().await?;
    println!("updated to version {}: bar = {:?}", foo.version(), foo.bar);

    let unchanged = foo.save().await?;
    println!("saving again without changes stored an event: {unchanged}");

    let found = Foo::find(Condition::like("bar", "hello%"))
        .order_by(Ordering::desc("updated_at"))
        .limit(5)
        .await?;
    println!("{} Foo(s) with bar LIKE 'hello%' in the store", found.len());

    let uuid = foo.uuid();
    foo.delete().await?;
    match Foo::get(uuid).await {
        Err(error) => println!("after delete: {error}"),
        Ok(_) => println!("after delete: still there?"),
    }
    Ok(())
}
