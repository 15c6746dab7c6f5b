"""The pages the deploy benchmark reads, by the name its tables show."""

PAGES = {
    "dashboard": "/",
    "hosts: first page": "/hosts/",
    "hosts: page 150": "/hosts/?page=150",
    "hosts: state=drift": "/hosts/?state=drift",
    "hosts: stage=prod&label=web&page=20": "/hosts/?stage=prod&label=web&page=20",
    "fleet view": "/hosts/fleet/",
}
