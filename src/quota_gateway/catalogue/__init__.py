"""Products and their features: the one catalogue shared by API-key and activation licensing.

Other domains call the service functions re-exported here (`catalogue.get_product`, ...) and
plug in through `FEATURE_CHECKS` and `ON_FEATURES_CHANGED` without this package importing them.
"""

from __future__ import annotations

from .routes import routes
from .service import (
    FEATURE_CHECKS,
    ON_FEATURES_CHANGED,
    check_feature_name,
    create_feature,
    create_product,
    feature_json,
    features_changed,
    find_product_by_name,
    get_product,
    list_products,
    product_features,
    product_json,
    remove_feature,
    update_product,
)

__all__ = ["FEATURE_CHECKS", "ON_FEATURES_CHANGED", "check_feature_name", "create_feature", "create_product",
           "feature_json", "features_changed", "find_product_by_name", "get_product", "list_products",
           "product_features", "product_json", "remove_feature", "routes", "update_product"]
