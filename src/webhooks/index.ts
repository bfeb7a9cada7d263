export * from './events';
export * from './hooks';
export * from './schema';
export * from './sign';
export * from './retry';
export * from './store';
export * from './deliver';
export * from './open';
