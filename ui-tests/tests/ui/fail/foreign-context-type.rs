//! A parameter typed with another crate's `Context`, taken for the parent by its name; the
//! error says how to get out of that.
use ctx_core::{Error, cancellable};

mod templates {
    pub struct Context;
}

#[cancellable]
fn render(page: &templates::Context) -> Result<(), Error> {
    let _ = page;
    Ok(())
}

fn main() {
    let _ = render(&templates::Context);
}
