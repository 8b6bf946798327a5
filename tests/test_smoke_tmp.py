from tests.conftest import deliver
from tests.support import stripe_factory as sf

def test_one(http, engine):
    r = deliver(http, sf.event("customer.subscription.created", sf.subscription("sub_1", "active", "prod_1")))
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "processed"
