//! The `weir` binary: the command line of [`weir::main_with_registry`] with Weir's built-in
//! programs.

fn main() -> std::process::ExitCode {
    weir::main_with_registry(weir_programs::builtin_registry())
}
