//! The arguments of `#[cancellable(...)]`, parsed with darling.
//!
//! Parsing the arguments is the first half of the parse step (the item is the other,
//! [`super::ast`]): a value that cannot be understood on its own (a malformed duration, a
//! string where an expression goes) is an error here; how the arguments fit the function is
//! [`super::validate`]'s business.
//!
//! Each value that an error may have to point at keeps its span (`SpannedValue`, or a `syn`
//! node that has one). Unknown and duplicate arguments are darling's errors ("Unknown field:
//! `timeot`. Did you mean `timeout`?", "Duplicate field `timeout`"); the rest are here.

use std::time::Duration;

use darling::FromMeta;
use darling::util::SpannedValue;

use crate::duration;

/// `#[cancellable(timeout = ..., deadline = ..., ctx = ..., checkpoints = ..., crate = ...,
/// allow_detached, allow_blocking, trace)]`.
#[derive(Debug, Default, FromMeta)]
pub(crate) struct Args {
    /// `timeout = "1m30s"` or `timeout = <expr of Duration>`.
    pub(crate) timeout: Option<SpannedValue<Timeout>>,
    /// `deadline = <expr of Instant>`.
    pub(crate) deadline: Option<SpannedValue<Deadline>>,
    /// `ctx = name`: the parameter that is the parent context.
    pub(crate) ctx: Option<syn::Ident>,
    /// `checkpoints = "all" | "loops" | "awaits" | "none"`.
    pub(crate) checkpoints: Option<Checkpoints>,
    /// `crate = "::path::to::ctx_core"`, for re-exporters.
    #[darling(rename = "crate")]
    pub(crate) krate: Option<SpannedValue<syn::Path>>,
    /// `allow_detached`: the body may start a new context tree (`Context::background()`, ...).
    #[darling(default)]
    pub(crate) allow_detached: Switch,
    /// `allow_blocking`: an async body may call `std::thread::sleep`, `ctx.wait()`.
    #[darling(default)]
    pub(crate) allow_blocking: Switch,
    /// `trace`: run the body in a `tracing` span that records the child's budget and end
    /// (ctx-core's `tracing` feature).
    #[darling(default)]
    pub(crate) trace: Switch,
}

impl Args {
    pub(crate) fn parse(attr: proc_macro2::TokenStream) -> darling::Result<Args> {
        let items = darling::ast::NestedMeta::parse_meta_list(attr)?;
        Args::from_list(&items).map_err(|errors| {
            crate::common::explain_fields(
                errors,
                "(`#[cancellable]` takes `timeout`, `deadline`, `ctx`, `checkpoints`, `crate`, \
                 `allow_detached`, `allow_blocking` and `trace`)",
            )
        })
    }
}

/// An argument that is present or not, written as a bare word (`allow_detached`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Switch(Option<proc_macro2::Span>);

impl Switch {
    pub(crate) fn is_on(self) -> bool {
        self.0.is_some()
    }

    /// Where it was written.
    pub(crate) fn span(self) -> Option<proc_macro2::Span> {
        self.0
    }
}

impl FromMeta for Switch {
    fn from_meta(item: &syn::Meta) -> darling::Result<Self> {
        match item {
            syn::Meta::Path(path) => Ok(Switch(Some(syn::spanned::Spanned::span(path)))),
            other => {
                let name = other.path().get_ident().map(ToString::to_string);
                let name = name.unwrap_or_default();
                Err(darling::Error::custom(format!(
                    "`{name}` takes no value: write `#[cancellable({name})]` to allow, and \
                     leave it out to keep the check"
                ))
                .with_span(other))
            }
        }
    }
}

/// The value of `timeout =`.
#[derive(Debug, Clone)]
pub(crate) enum Timeout {
    /// A Go duration string, checked and converted at compile time.
    Literal(Duration),
    /// Any other expression: must have type `std::time::Duration`.
    Expr(syn::Expr),
}

impl FromMeta for Timeout {
    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) => duration::parse_timeout(&lit.value())
                .map(Timeout::Literal)
                .map_err(|err| darling::Error::custom(err).with_span(lit)),
            syn::Expr::Lit(syn::ExprLit {
                lit: lit @ (syn::Lit::Int(_) | syn::Lit::Float(_)),
                ..
            }) => {
                let number = quote::ToTokens::to_token_stream(lit).to_string();
                Err(darling::Error::custom(format!(
                    "`timeout = {number}` has no unit: write a Go duration string such as \
                     `timeout = \"{number}s\"` or `timeout = \"{number}ms\"`"
                ))
                .with_span(lit))
            }
            syn::Expr::Group(group) => Timeout::from_expr(&group.expr),
            other => Ok(Timeout::Expr(other.clone())),
        }
    }
}

/// The value of `deadline =`: an expression of type `std::time::Instant`.
#[derive(Debug, Clone)]
pub(crate) struct Deadline(pub(crate) syn::Expr);

impl FromMeta for Deadline {
    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) => Err(darling::Error::custom(
                "`deadline` takes an expression of type `std::time::Instant`, not a string: \
                 for a duration from the call, write `timeout = \"...\"` instead",
            )
            .with_span(lit)),
            syn::Expr::Group(group) => Deadline::from_expr(&group.expr),
            other => Ok(Deadline(other.clone())),
        }
    }
}

/// Which checkpoints the rewrite inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Checkpoints {
    /// Loops and `.await`s (the default).
    #[default]
    All,
    /// Only at the start of each loop iteration.
    Loops,
    /// Only at each `.await`.
    Awaits,
    /// None: the function only derives the child and makes it current.
    None,
}

impl Checkpoints {
    pub(crate) fn loops(self) -> bool {
        matches!(self, Checkpoints::All | Checkpoints::Loops)
    }

    pub(crate) fn awaits(self) -> bool {
        matches!(self, Checkpoints::All | Checkpoints::Awaits)
    }
}

impl FromMeta for Checkpoints {
    fn from_string(value: &str) -> darling::Result<Self> {
        Ok(match value {
            "all" => Checkpoints::All,
            "loops" => Checkpoints::Loops,
            "awaits" => Checkpoints::Awaits,
            "none" => Checkpoints::None,
            other => {
                return Err(darling::Error::custom(format!(
                    "unknown `checkpoints = \"{other}\"`: expected \"all\" (the default), \
                     \"loops\", \"awaits\" or \"none\""
                )));
            }
        })
    }

    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) => Checkpoints::from_string(&lit.value()).map_err(|e| e.with_span(lit)),
            syn::Expr::Path(path) if path.path.get_ident().is_some() => {
                let ident = path.path.get_ident().map(ToString::to_string);
                let ident = ident.unwrap_or_default();
                Checkpoints::from_string(&ident)
                    .map_err(|e| e.with_span(path))
                    .and_then(|_| {
                        Err(darling::Error::custom(format!(
                            "write `checkpoints = \"{ident}\"`, with quotes"
                        ))
                        .with_span(path))
                    })
            }
            syn::Expr::Group(group) => Checkpoints::from_expr(&group.expr),
            other => Err(darling::Error::custom(
                "`checkpoints` takes one of \"all\", \"loops\", \"awaits\" or \"none\"",
            )
            .with_span(other)),
        }
    }
}
