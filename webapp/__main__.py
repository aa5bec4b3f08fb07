"""`python -m webapp --host 127.0.0.1 --port 8000`: serve the site (development server; see README for production)."""

import argparse

from webapp import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m webapp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app = create_app()
    print(f"Lantern is serving on http://{args.host}:{args.port}/ (models from {app.config['MODELS_DIR']})")
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
