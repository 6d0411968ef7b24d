//! The `weir` binary: the command line of [`weir::main_with_registry`] with Weir's built-in
//! programs and the Kafka connector's programs.

fn main() -> std::process::ExitCode {
    let mut registry = weir_programs::builtin_registry();
    for program in weir_kafka::programs() {
        registry.register(program);
    }
    weir::main_with_registry(registry)
}
