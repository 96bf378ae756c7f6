"""Constants shared by meta's tests (a module of its own: every test folder has a conftest)."""

#: argon2 parameters that make hashing cheap in tests; production uses the library defaults.
FAST_HASHER = {"time_cost": 1, "memory_cost": 64, "parallelism": 1}
#: The password every test user gets.
PASSWORD = "correct horse battery"
