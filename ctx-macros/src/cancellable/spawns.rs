//! Which paths in a `#[cancellable]` body name one of tokio's spawns, the calls that lose the
//! function's context: the spawned task runs with no ambient context (tokio's task-locals do
//! not follow `tokio::spawn`), so the caller's deadline and cancellation never reach it, and it
//! may outlive the call. [`super::lints`] reports them, naming `ctx_core::spawn` /
//! `ctx_core::spawn_blocking` as the fix.
//!
//! What reading the syntax can tell (and what it cannot):
//! - full paths, with or without a leading `::`: `tokio::spawn`, `tokio::task::spawn`,
//!   `tokio::task::spawn_blocking` (called, with turbofish or not, or passed as a function);
//! - `task::spawn` and `task::spawn_blocking`, the spelling after `use tokio::task;`: a module
//!   named `task` is taken for tokio's, as a type named `Context` is taken for ctx_core's;
//! - any name the body's own `use` items bind to those (`use tokio::task::spawn_blocking;`,
//!   `use tokio::spawn as detach;`, `use tokio::task as t;`, `use tokio::task::*;`), in any
//!   block of the body.
//!
//! Not flagged: a spawn that carries a context by hand, `tokio::spawn(ctx.scope(fut))` (its
//! argument a `.scope(..)` call) or `spawn_blocking(move || ctx.enter(f))` (a closure whose
//! body is an `.enter(..)` call), as `ctx_core::spawn` itself does.
//!
//! Not seen: a bare `spawn(..)` or `spawn_blocking(..)` imported outside the function (the
//! fix, `use ctx_core::spawn_blocking;`, is spelled the same at the call), method calls
//! (`Handle::current().spawn(..)`, `JoinSet::spawn`), whose receiver's type the macro cannot
//! know, and spawns inside helper functions.

/// What a spawn runs, and so which of ctx_core's spawns replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spawn {
    /// A future: `ctx_core::spawn`.
    Task,
    /// A closure on the blocking pool: `ctx_core::spawn_blocking`.
    Blocking,
}

impl Spawn {
    /// ctx_core's spawn that carries the context into the task.
    pub(crate) fn fix(self) -> &'static str {
        match self {
            Spawn::Task => "ctx_core::spawn",
            Spawn::Blocking => "ctx_core::spawn_blocking",
        }
    }

    /// `tokio::spawn`, `tokio::task::spawn`, `tokio::task::spawn_blocking`: the full path.
    fn of_full(segments: &[String]) -> Option<Spawn> {
        let names: Vec<&str> = segments.iter().map(String::as_str).collect();
        match names.as_slice() {
            ["tokio", "spawn"] | ["tokio", "task", "spawn"] => Some(Spawn::Task),
            ["tokio", "task", "spawn_blocking"] => Some(Spawn::Blocking),
            _ => None,
        }
    }

    /// The function named by the last segment of a path into tokio's `task` module.
    fn in_task_module(name: &str) -> Option<Spawn> {
        match name {
            "spawn" => Some(Spawn::Task),
            "spawn_blocking" => Some(Spawn::Blocking),
            _ => None,
        }
    }
}

/// Whether a spawn's arguments carry a context by hand: `tokio::spawn(ctx.scope(fut))`, or
/// `spawn_blocking(move || ctx.enter(f))` (the closure's body, braces or not, an `.enter(..)`).
pub(crate) fn carries_context(spawn: Spawn, args: &[&syn::Expr]) -> bool {
    let [arg] = args else {
        return false;
    };
    let method_is = |expr: &syn::Expr, name: &str| matches!(expr, syn::Expr::MethodCall(call) if call.method == name);
    match (spawn, arg) {
        (Spawn::Task, arg) => method_is(arg, "scope"),
        (Spawn::Blocking, syn::Expr::Closure(closure)) => match &*closure.body {
            syn::Expr::Block(block) => match block.block.stmts.as_slice() {
                [syn::Stmt::Expr(expr, None)] => method_is(expr, "enter"),
                _ => false,
            },
            body => method_is(body, "enter"),
        },
        _ => false,
    }
}

/// The names the body's own `use` items bind to tokio's spawns and to its `task` module.
#[derive(Debug, Default)]
pub(crate) struct Imports {
    /// `use tokio::task::spawn_blocking;` binds `spawn_blocking`; `use tokio::spawn as go;`
    /// binds `go`.
    functions: Vec<(String, Spawn)>,
    /// `use tokio::task as t;` binds `t` (`task` itself is always taken for tokio's).
    task_modules: Vec<String>,
}

impl Imports {
    /// The `use` items anywhere in `block`, but not in nested items (other functions' bodies).
    pub(crate) fn of(block: &syn::Block) -> Imports {
        let mut imports = Imports::default();
        syn::visit::Visit::visit_block(&mut imports, block);
        imports
    }

    fn add(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.add(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                // `use tokio::task::{self}` binds `task`.
                let (full, bound) = if name.ident == "self" {
                    (prefix.clone(), prefix.last().cloned().unwrap_or_default())
                } else {
                    let mut full = prefix.clone();
                    full.push(name.ident.to_string());
                    (full, name.ident.to_string())
                };
                self.bind(&full, bound);
            }
            syn::UseTree::Rename(rename) => {
                let mut full = prefix.clone();
                if rename.ident != "self" {
                    full.push(rename.ident.to_string());
                }
                if rename.rename != "_" {
                    self.bind(&full, rename.rename.to_string());
                }
            }
            syn::UseTree::Glob(_) => match prefix.as_slice() {
                [tokio] if tokio == "tokio" => {
                    self.functions.push(("spawn".to_owned(), Spawn::Task));
                }
                [tokio, task] if tokio == "tokio" && task == "task" => {
                    self.functions.push(("spawn".to_owned(), Spawn::Task));
                    self.functions
                        .push(("spawn_blocking".to_owned(), Spawn::Blocking));
                }
                _ => {}
            },
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.add(prefix, tree);
                }
            }
        }
    }

    fn bind(&mut self, full: &[String], bound: String) {
        if let Some(spawn) = Spawn::of_full(full) {
            self.functions.push((bound, spawn));
        } else if full == ["tokio", "task"] {
            self.task_modules.push(bound);
        }
    }

    /// Which spawn `path` names, if it is one of tokio's.
    pub(crate) fn spawn(&self, path: &syn::Path) -> Option<Spawn> {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(spawn) = Spawn::of_full(&segments) {
            return Some(spawn);
        }
        match segments.as_slice() {
            [module, name]
                if path.leading_colon.is_none()
                    && (module == "task" || self.task_modules.contains(module)) =>
            {
                Spawn::in_task_module(name)
            }
            [name] if path.leading_colon.is_none() => self
                .functions
                .iter()
                .find(|(bound, _)| bound == name)
                .map(|(_, spawn)| *spawn),
            _ => None,
        }
    }
}

impl<'ast> syn::visit::Visit<'ast> for Imports {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        // A `use` in the body binds names for the body; other items are other functions.
        if let syn::Item::Use(item) = item {
            self.add(&mut Vec::new(), &item.tree);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawns(body: &str, paths: &[&str]) -> Vec<Option<Spawn>> {
        let block: syn::Block = syn::parse_str(body).unwrap();
        let imports = Imports::of(&block);
        paths
            .iter()
            .map(|path| imports.spawn(&syn::parse_str(path).unwrap()))
            .collect()
    }

    #[test]
    fn every_spelling() {
        use Spawn::{Blocking, Task};
        assert_eq!(
            spawns(
                "{}",
                &[
                    "tokio::spawn",
                    "::tokio::spawn",
                    "tokio::task::spawn",
                    "::tokio::task::spawn_blocking",
                    "task::spawn",
                    "task::spawn_blocking",
                    "tokio::spawn::<F>",
                ]
            ),
            [
                Some(Task),
                Some(Task),
                Some(Task),
                Some(Blocking),
                Some(Task),
                Some(Blocking),
                Some(Task)
            ]
        );
    }

    #[test]
    fn names_bound_in_the_body() {
        use Spawn::{Blocking, Task};
        let body = "{ use tokio::task::spawn_blocking; \
                    { use ::tokio::{spawn as go, task::{self as t}}; } \
                    use tokio::task::spawn as _; }";
        assert_eq!(
            spawns(
                body,
                &["spawn_blocking", "go", "t::spawn", "spawn", "t::yield_now"]
            ),
            [Some(Blocking), Some(Task), Some(Task), None, None]
        );
        assert_eq!(
            spawns("{ use tokio::task::*; }", &["spawn", "spawn_blocking"]),
            [Some(Task), Some(Blocking)]
        );
    }

    #[test]
    fn spawns_that_carry_a_context_by_hand() {
        let carries = |spawn, arg: &str| {
            let arg: syn::Expr = syn::parse_str(arg).unwrap();
            carries_context(spawn, &[&arg])
        };
        assert!(carries(Spawn::Task, "ctx.scope(async {})"));
        assert!(carries(Spawn::Task, "Context::current().scope(fetch())"));
        assert!(carries(Spawn::Blocking, "move || ctx.enter(work)"));
        assert!(carries(Spawn::Blocking, "move || { ctx.enter(|| 1) }"));
        assert!(!carries(Spawn::Task, "async move { ctx.scope(f).await }"));
        assert!(!carries(
            Spawn::Blocking,
            "move || { let x = 1; ctx.enter(|| x) }"
        ));
        assert!(!carries(Spawn::Blocking, "ctx.scope(f)"));
    }

    #[test]
    fn what_is_not_a_tokio_spawn() {
        let body = "{ use ctx_core::spawn_blocking; fn helper() { use tokio::spawn; } }";
        assert_eq!(
            spawns(
                body,
                &[
                    "spawn",
                    "spawn_blocking",
                    "ctx_core::spawn",
                    "ctx_core::spawn_blocking",
                    "::task::spawn",
                    "std::thread::spawn",
                    "tokio::task::spawn_local",
                    "other::task::spawn",
                ]
            ),
            [None, None, None, None, None, None, None, None]
        );
    }
}
