export declare const STAMP_FILE: string
/** The stamp of root/src as it is now. */
export declare function sourceStamp (root: string): string
/** True when root/dist holds a build of the sources as they are now. */
export declare function distIsCurrent (root: string): boolean
