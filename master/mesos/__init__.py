"""The Mesos resource backend (docs/mesos.md): offers become agents for the same placement engine."""
