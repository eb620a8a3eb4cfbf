"""Self-test of db_connections.py: the shipped numbers and a limit that is too low.
Run: python3 deploy/tools/db_connections_test.py (no dependencies)."""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import db_connections as dc  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


class ConnectionArithmetic(unittest.TestCase):
    def shipped(self) -> dc.Demand:
        return dc.demand({"WAFLEET_DB_POOL_SIZE": "10", "WAFLEET_SENDER_DB_POOL_SIZE": "3"}, 12,
                         {"WAFLEET_ADMIN_DB_POOL_SIZE": "5"}, 2, dc.leader_duties(REPO))

    def test_the_formula_counts_pools_listen_lease_leaders_admin_and_cli(self):
        d = self.shipped()
        self.assertEqual(d.leaders, 3)
        self.assertEqual(d.app_role, 12 * (10 + 3 + 1 + 1) + 2 * 3 + 2 * 5 + 2)

    def test_the_old_limit_of_160_is_refused(self):
        found = dc.problems(self.shipped(), {"wafleet_app": {"connectionLimit": 160}}, 250)
        self.assertTrue(any("connectionLimit 160 < 198" in p for p in found), found)

    def test_a_limit_covering_the_demand_passes_and_max_connections_must_cover_the_limit(self):
        self.assertEqual(dc.problems(self.shipped(), {"wafleet_app": {"connectionLimit": 200}}, 250), [])
        found = dc.problems(self.shipped(), {"wafleet_app": {"connectionLimit": 200}}, 205)
        self.assertTrue(any(p.startswith("max_connections 205 <") for p in found), found)

    def test_a_role_per_duty_is_checked_share_by_share(self):
        d = self.shipped()
        ok = {"wafleet_worker": {"connectionLimit": d.worker}, "wafleet_admin": {"connectionLimit": d.admin}}
        self.assertEqual(dc.problems(d, ok, 250), [])
        low = {"wafleet_worker": {"connectionLimit": d.worker - 1}, "wafleet_admin": {"connectionLimit": d.admin}}
        self.assertTrue(any("wafleet_worker" in p for p in dc.problems(d, low, 250)))


if __name__ == "__main__":
    unittest.main()
