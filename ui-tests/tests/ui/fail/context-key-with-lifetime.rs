use ctx_core::ContextKey;

#[derive(ContextKey)]
struct User<'a> {
    name: &'a str,
}

fn main() {}
