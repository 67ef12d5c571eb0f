//! `debug::snapshot()` (feature `debug-tree`): the live contexts as a tree.
#![cfg(feature = "debug-tree")]

use std::time::Duration;

use ctx_core::{Context, ContextKey, debug};

struct Secret(&'static str);
impl ContextKey for Secret {
    const NAME: &'static str = "Secret";
}

/// The lines of a snapshot from the first one containing `marker` on, while indented deeper.
fn subtree(shown: &str, marker: &str) -> Vec<String> {
    let mut lines = shown.lines().skip_while(|line| !line.contains(marker));
    let Some(first) = lines.next() else {
        return Vec::new();
    };
    let depth = first.len() - first.trim_start().len();
    let mut out = vec![first.to_string()];
    out.extend(
        lines
            .take_while(|line| line.len() - line.trim_start().len() > depth)
            .map(str::to_string),
    );
    out
}

#[test]
fn shows_kinds_ages_deadlines_key_names_and_where_each_was_made() {
    let root = Context::background().with_value(Secret("hunter2"));
    let line = line!() + 1;
    let request = root.with_timeout(Duration::from_secs(30));
    let step = request.with_cancel();
    let detached = request.without_cancel();
    let gone = request.with_cancel();
    let gone_ctx = gone.context().clone();
    gone.cancel();

    let shown = debug::snapshot().to_string();
    let tree = subtree(&shown, "WithValue(Secret)");
    assert_eq!(tree.len(), 5, "{shown}");
    assert!(
        tree[0].starts_with("context.Background.WithValue(Secret)  age "),
        "{tree:?}"
    );
    assert!(tree[1].starts_with("  WithDeadline  age "), "{tree:?}");
    assert!(tree[1].contains("deadline in "), "{tree:?}");
    assert!(
        tree[1].ends_with(&format!("at {}:{line}:{}", file!(), 24)),
        "{tree:?}"
    );
    // Children in creation order, one level deeper.
    assert!(tree[2].starts_with("    WithCancel  age "), "{tree:?}");
    assert!(tree[3].starts_with("    WithoutCancel  age "), "{tree:?}");
    assert!(
        tree[4].starts_with("    WithCancel  age ") && tree[4].contains("  cancelled  "),
        "{tree:?}"
    );
    assert_eq!(step.value::<Secret>().unwrap().0, "hunter2");
    assert!(
        !shown.contains("hunter2"),
        "a value leaked into the snapshot"
    );

    drop((step, detached, gone_ctx));
    let shown = debug::snapshot().to_string();
    assert_eq!(
        subtree(&shown, "WithValue(Secret)").len(),
        2,
        "dropped contexts remain: {shown}"
    );
    drop((request, root));
    assert!(subtree(&debug::snapshot().to_string(), "WithValue(Secret)").is_empty());
}
