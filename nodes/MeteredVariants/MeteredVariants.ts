/**
 * Not a node (no `nodeClass`, so Flowise skips it): the factory the generated
 * `<Node>.billing-metered.js` files beside flowise-components' chat models and
 * tools require (src/installer/variants.ts). A folder of its own so the
 * build bundles it as one file the variants can reach.
 */
export { meteredModelModule, meteredToolModule } from '../shared/variant';
