export * from './token';
export * from './customer';
