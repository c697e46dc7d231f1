use clap::Parser;

ballast::use_mimalloc!();

fn main() {
    let cli = ballast::cli::Cli::parse();
    std::process::exit(ballast::cli::run(cli));
}
