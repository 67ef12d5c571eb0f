//! The plan: every decision about the function, made once after [`super::validate`] has
//! passed, so that [`super::expand`] only generates.

use std::time::Duration;

use proc_macro2::Span;

use super::args::{Args, Checkpoints, Timeout};
use super::ast::Function;

/// What `expand` generates.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The function, as parsed.
    pub(crate) func: Function,
    /// Where `__private` lives: `::ctx_core` unless `crate = "..."`.
    pub(crate) krate: syn::Path,
    pub(crate) parent: Parent,
    pub(crate) child: Child,
    pub(crate) checkpoints: Checkpoints,
    /// The type the body evaluates to: the return type, or under `#[async_trait]` the
    /// future's `Output`.
    pub(crate) output: syn::Type,
    /// `trace`: the span's name (the function's), and where `trace` was written.
    pub(crate) trace: Option<(String, Span)>,
}

/// Where the parent context comes from.
#[derive(Debug)]
pub(crate) enum Parent {
    /// Accept: this parameter (of type `&Context` when `by_ref`, else `Context`).
    Param {
        ident: syn::Ident,
        by_ref: bool,
        mutable: bool,
    },
    /// Derive: `Context::current()`, read when the function is called.
    Current,
}

/// How the child is derived from the parent.
#[derive(Debug)]
pub(crate) enum Child {
    /// `with_cancel`.
    Cancel,
    /// `with_timeout` of a duration parsed at compile time.
    Timeout(Duration, Span),
    /// `with_timeout(<expr>)`.
    TimeoutExpr(syn::Expr),
    /// `with_deadline(<expr>)`.
    Deadline(syn::Expr),
}

impl Plan {
    /// The plan for a function that passed validation.
    pub(crate) fn new(args: Args, func: Function) -> Plan {
        let krate = crate::common::crate_path(args.krate.as_ref());
        let parent = Parent::of(&func, args.ctx.as_ref());
        let child = match (args.timeout, args.deadline) {
            (Some(timeout), _) => {
                let span = timeout.span();
                match (*timeout).clone() {
                    Timeout::Literal(duration) => Child::Timeout(duration, span),
                    Timeout::Expr(expr) => Child::TimeoutExpr(expr),
                }
            }
            (None, Some(deadline)) => Child::Deadline(deadline.0.clone()),
            (None, None) => Child::Cancel,
        };
        let output = func
            .output()
            .cloned()
            .unwrap_or_else(|| syn::parse_quote!(()));
        let trace = args
            .trace
            .span()
            .map(|span| (func.sig.ident.to_string(), span));
        Plan {
            trace,
            func,
            krate,
            parent,
            child,
            checkpoints: args.checkpoints.unwrap_or_default(),
            output,
        }
    }
}

impl Parent {
    /// The parameter named by `ctx = name`, else the one typed as a context, else derive.
    pub(crate) fn of(func: &Function, named: Option<&syn::Ident>) -> Parent {
        let param = match named {
            Some(named) => func.params.iter().find(|p| p.ident == *named),
            None => func.params.iter().find(|p| p.context.is_some()),
        };
        match param {
            Some(param) => Parent::Param {
                ident: param.ident.clone(),
                by_ref: param.context == Some(true),
                mutable: param.mutable,
            },
            None => Parent::Current,
        }
    }

    /// The context parameter's name, in accept mode.
    pub(crate) fn ident(&self) -> Option<&syn::Ident> {
        match self {
            Parent::Param { ident, .. } => Some(ident),
            Parent::Current => None,
        }
    }
}
