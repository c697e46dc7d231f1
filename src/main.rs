use clap::Parser;

fn main() {
    let cli = ballast::cli::Cli::parse();
    std::process::exit(ballast::cli::run(cli));
}
