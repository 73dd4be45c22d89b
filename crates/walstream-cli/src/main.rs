//! The `walstream` command-line tool. Its contract is `shared/CLI.md`; the subcommands arrive
//! with their own issue.

fn main() {
    eprintln!("walstream: no subcommands yet (see the project's issues)");
    std::process::exit(2);
}
