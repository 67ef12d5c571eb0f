//! What a chain of contexts says about itself: the values along it, and how it prints. The
//! handles and the debug registry ask here rather than match on a node's [`Kind`].

use std::any::{Any, TypeId};
use std::fmt;
use std::time::Instant;

use super::{Kind, Link, Node, NodeRef, Root};
use crate::context::go_format::{go_duration, go_time};

/// One derivation of a chain, as Go names it.
pub(in crate::context) enum Step<'a> {
    WithCancel,
    WithDeadline(Instant),
    WithValue(&'static str),
    WithoutCancel,
    /// A merge, with its second parent (if the node holds one).
    Merge(Option<&'a Link>),
}

impl Node<dyn Any + Send + Sync> {
    /// How this node was derived.
    pub(in crate::context) fn step(&self) -> Step<'_> {
        match &self.kind {
            Kind::Cancel(core) if core.is_merged() => Step::Merge(self.merged().map(|m| &m.other)),
            Kind::Cancel(core) => match core.own_deadline() {
                Some(at) => Step::WithDeadline(at),
                None => Step::WithCancel,
            },
            Kind::Value { name, .. } => Step::WithValue(name),
            Kind::WithoutCancel => Step::WithoutCancel,
        }
    }
}

impl Step<'_> {
    /// The step's name alone, without a deadline's time or a merge's other chain (the
    /// debug registry's tree).
    pub(in crate::context) fn name(&self) -> String {
        match self {
            Step::WithCancel => "WithCancel".into(),
            Step::WithDeadline(_) => "WithDeadline".into(),
            Step::WithValue(name) => format!("WithValue({name})"),
            Step::WithoutCancel => "WithoutCancel".into(),
            Step::Merge(_) => "Merge".into(),
        }
    }
}

/// A root's name as Go prints it.
pub(in crate::context) fn root_name(root: Root) -> &'static str {
    match root {
        Root::Todo => "context.TODO",
        Root::Background => "context.Background",
    }
}

impl Link {
    /// The innermost value stored under the key type `wanted`, from here up: a merged node's
    /// parent chain first, then its other context's.
    #[inline]
    pub(in crate::context) fn value(&self, wanted: TypeId) -> Option<&(dyn Any + Send + Sync)> {
        let mut link = self;
        while let Link::Node(node) = link {
            match &node.kind {
                Kind::Value { key, .. } if *key == wanted => return Some(&node.value),
                Kind::Cancel(core) if core.is_merged() => {
                    if let Some(merged) = node.merged() {
                        if let Some(found) = node.parent.value(wanted) {
                            return Some(found);
                        }
                        link = &merged.other;
                        continue;
                    }
                }
                _ => {}
            }
            link = &node.parent;
        }
        None
    }

    /// The nodes of this chain, from the root's child down to this one, and the root.
    fn chain(&self) -> (Root, Vec<&NodeRef>) {
        let mut chain = Vec::new();
        let mut link = self;
        loop {
            match link {
                Link::Node(node) => {
                    chain.push(node);
                    link = &node.parent;
                }
                Link::Root(root) => {
                    chain.reverse();
                    return (*root, chain);
                }
            }
        }
    }

    /// Prints the derivation chain as Go does, e.g.
    /// `context.Background.WithCancel.WithValue(User)`.
    pub(in crate::context) fn fmt_chain(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (root, chain) = self.chain();
        f.write_str(root_name(root))?;
        for node in chain {
            match node.step() {
                Step::Merge(Some(other)) => {
                    f.write_str(".Merge(")?;
                    other.fmt_chain(f)?;
                    f.write_str(")")?;
                }
                Step::WithDeadline(at) => write!(
                    f,
                    ".WithDeadline({} [{}])",
                    go_time(at),
                    go_duration(signed_nanos_until(at))
                )?,
                step => write!(f, ".{}", step.name())?,
            }
        }
        Ok(())
    }
}

fn signed_nanos_until(at: Instant) -> i128 {
    let now = Instant::now();
    if at >= now {
        (at - now).as_nanos() as i128
    } else {
        -((now - at).as_nanos() as i128)
    }
}
