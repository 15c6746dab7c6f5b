"""The project's wiring for `make run`: the demo data, the demo's image and fleet, and the process supervisor.

Unlike the core (the rest of `portal/`), this app may import every feature: it is what puts them together."""
