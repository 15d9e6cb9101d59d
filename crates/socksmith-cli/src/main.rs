//! The `socksmith` binary: a thin command-line front over the `socksmith` library.

fn main() {
    println!("socksmith");
}
