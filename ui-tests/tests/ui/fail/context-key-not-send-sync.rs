//! A context key with a field that is not `Send + Sync` (`Rc<RefCell<..>>`).
use std::cell::RefCell;
use std::rc::Rc;

use ctx_core::ContextKey;

#[derive(ContextKey)]
struct Session {
    id: u64,
    cache: Rc<RefCell<Vec<u8>>>,
}

fn main() {}
