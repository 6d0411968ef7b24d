//! `my-weir`: the `weir` command line with the built-in programs plus this crate's own
//! `word-count` program. Every subcommand (`run`, `validate`, `programs`, `bench`) works as in
//! `weir`, and manifests can name `word-count` in `spec.job.program`.

mod word_count;

fn main() -> std::process::ExitCode {
    // Start from the built-in programs so this binary can run their manifests too; a binary
    // that only runs its own programs would start from `weir_core::Registry::new()`.
    let mut registry = weir_programs::builtin_registry();
    registry.register(word_count::program());
    weir::main_with_registry(registry)
}
